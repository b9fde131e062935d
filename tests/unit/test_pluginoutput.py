"""The one monitoring-plugins output builder: worst state wins, one line, perfdata."""
from lvskit.errors import CHECK_CRITICAL, CHECK_OK, CHECK_UNKNOWN, CHECK_WARNING
from lvskit.pluginoutput import Output, worst


def test_the_worst_sub_check_is_the_state():
    assert worst() == CHECK_OK
    assert worst(CHECK_OK, CHECK_WARNING) == CHECK_WARNING
    assert worst(CHECK_WARNING, CHECK_UNKNOWN) == CHECK_UNKNOWN     # could not tell: worse than a warning
    assert worst(CHECK_UNKNOWN, CHECK_CRITICAL, CHECK_OK) == CHECK_CRITICAL


def test_one_line_then_long_output():
    out = Output("X")
    out.add(CHECK_OK, "a fine")
    out.add(CHECK_CRITICAL, "b down | really")
    out.add(CHECK_WARNING)                      # counted, not named
    out.metric("up", 1, lo=0, hi=2)
    out.metric("time", "0.120", "s", lo=0)
    out.metric("n", 3)
    out.detail("more")
    assert out.code == CHECK_CRITICAL
    assert out.lines("1/2 up") == ["X CRITICAL - 1/2 up; a fine; b down / really | up=1;;;0;2 time=0.120s;;;0 n=3",
                                   "more"]


def test_no_perfdata_no_bar():
    out = Output("X")
    out.add(CHECK_UNKNOWN)
    assert out.lines("no IPVS") == ["X UNKNOWN - no IPVS"]
