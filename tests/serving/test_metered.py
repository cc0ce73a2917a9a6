"""One metered call end to end inside a running Runtime: admit, settle, and a caller gone away mid-settle."""

import asyncio

import pytest

from chatmeter.metering import Usage
from serving import metered
from serving.admission import Subject
from serving.metered import Call
from serving.runtime import Runtime


@pytest.fixture
def run(settings):
    """Run `body(rt, call)` in a started Runtime, with a call of a fresh free-plan tenant."""

    def runner(body):
        async def main():
            rt = Runtime(settings)
            await rt.start()
            try:
                tenant, _, _ = rt.store.create_tenant("Acme", "free")
                ctx = rt.tenant_context(tenant.tenant_id)
                call = Call(ctx, Subject(tenant.tenant_id, "key_1", "alice"), "chat", "gpt-4o-mini", "api")
                return await body(rt, call)
            finally:
                await rt.close()

        return asyncio.run(main())

    return runner


def month_tokens(rt: Runtime, call: Call):
    (rule,) = [r for r in metered.rules_in_force(rt, call, metered.utcnow()) if r.key[3] == "tokens"]
    return rt.admission.used(rule.key), rt.admission.reserved(rule.key)


def test_settle_replaces_the_hold_with_the_usage(run):
    async def body(rt, call):
        await metered.admit(rt, call, 100, 500)
        assert month_tokens(rt, call) == (0, 600)
        await metered.settle(rt, call, Usage(input_tokens=100, output_tokens=42))
        return month_tokens(rt, call), rt.admission.open_holds()

    assert run(body) == ((142, 0), 0)


def test_a_caller_cancelled_while_its_event_is_written_is_counted_all_the_same(run):
    """The client went away after the model answered: the event is durable, so it counts, and the hold
    is dropped in the same step (never both at once, never neither)."""

    async def body(rt, call):
        await metered.admit(rt, call, 100, 500)
        task = asyncio.create_task(metered.settle(rt, call, Usage(input_tokens=100, output_tokens=42)))
        await asyncio.sleep(0)  # appended, not yet durable
        assert month_tokens(rt, call) == (0, 600)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        for _ in range(200):
            if rt.log.events_written:
                break
            await asyncio.sleep(0.01)
        return month_tokens(rt, call), rt.admission.open_holds(), rt.log.events_written

    assert run(body) == ((142, 0), 0, 1)
