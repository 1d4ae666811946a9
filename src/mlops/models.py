"""One place that imports every domain's ORM models so that ``Base.metadata`` is complete."""


def import_all_models() -> None:
    import mlops.security.models  # noqa: F401
