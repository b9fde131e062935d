import pytest

from installtools import PREFIX, make


@pytest.fixture(scope="module")
def destdir(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("destdir"))
    res = make("install", f"DESTDIR={d}", f"PREFIX={PREFIX}")
    return d, res
