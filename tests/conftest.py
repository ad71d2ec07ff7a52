import pytest

from raybench import data


@pytest.fixture(scope="session")
def embedded() -> data.Prepared:
    """The embedded 400-image sample, prepared once with the default tiers (large and tiny) and seed 0."""
    return data.prepare(None)


@pytest.fixture(scope="session")
def decoded_cache(tmp_path_factory):
    """A decode-once cache folder shared by the whole test session."""
    return tmp_path_factory.mktemp("decoded")
