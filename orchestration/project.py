"""The one dbt project of the pipeline. Never parsed at import time: `prepare_if_dev()` only acts under
`dagster dev`; tests and `run_pipeline` parse it explicitly (see orchestration.run.ensure_manifest)."""

import sys
from pathlib import Path

from dagster_dbt import DbtProject

DBT_PROJECT_DIR = Path(__file__).resolve().parent.parent / "dbt_project"
# dagster-dbt looks for `dbt` on PATH; use the one installed beside this interpreter.
DBT_EXECUTABLE = str(Path(sys.executable).with_name("dbt"))

dbt_project = DbtProject(project_dir=DBT_PROJECT_DIR, profiles_dir=DBT_PROJECT_DIR)
dbt_project.prepare_if_dev()
