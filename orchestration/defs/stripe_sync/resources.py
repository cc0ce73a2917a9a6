import dagster as dg
import stripe


class StripeResource(dg.ConfigurableResource):
    """The official SDK's client. `api_base` points it elsewhere (a test double); no key, no sync."""

    api_key: str | None = None
    api_base: str | None = None

    def client(self) -> stripe.StripeClient | None:
        if not self.api_key:
            return None
        base = {"api": self.api_base} if self.api_base else None
        return stripe.StripeClient(self.api_key, base_addresses=base, max_network_retries=2)
