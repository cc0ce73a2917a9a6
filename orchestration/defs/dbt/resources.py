from dagster_dbt import DbtCliResource

from orchestration.project import DBT_EXECUTABLE, dbt_project


def dbt_resource() -> DbtCliResource:
    return DbtCliResource(project_dir=dbt_project, dbt_executable=DBT_EXECUTABLE)
