"""/etc/subuid and /etc/subgid as shadow-utils reads them (common/subids.py)."""

from __future__ import annotations

from podkit.common.subids import IdMapping, mapping_for, ranges

SUBUID = """\
# comments and blank lines are skipped

alice:100000:65536
1001:300000:1000
bob:200000:65536
alice:500000:10
broken:line
carol:x:5
dave:0:100
"""


def test_ranges_match_the_name_or_the_numeric_id_in_file_order() -> None:
    assert ranges(SUBUID, "alice", 1000) == [(100000, 65536), (500000, 10)]
    assert ranges(SUBUID, "erin", 1001) == [(300000, 1000)]
    assert ranges(SUBUID, "bob", 4242) == [(200000, 65536)]


def test_malformed_or_empty_entries_are_ignored() -> None:
    assert ranges(SUBUID, "broken", 7) == []
    assert ranges(SUBUID, "carol", 8) == []
    assert ranges(SUBUID, "dave", 9) == []  # a range from 0 would map the host's root


def test_the_mapping_puts_the_user_at_0_and_the_first_range_from_1() -> None:
    m = mapping_for(1000, 1000, [(100000, 65536), (500000, 10)], [(200000, 4096)])
    assert m == IdMapping(((0, 1000, 1), (1, 100000, 65536)), ((0, 1000, 1), (1, 200000, 4096)))
    assert mapping_for(1000, 1000, [], [(200000, 10)]) is None
    assert mapping_for(1000, 1000, [(100000, 10)], []) is None
