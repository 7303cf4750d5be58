"""Unit tests of the Sparkplug B edge node session, one per specification requirement.

Each test names the Sparkplug 3.0 assertion id (``tck-id-...``) it checks.
"""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from edge.protocols.sparkplug.session import (
    Connect,
    Connected,
    ConnectSent,
    Dial,
    Disconnect,
    HostState,
    HostWait,
    Lost,
    PersistBdSeq,
    Phase,
    PublishData,
    PublishDeath,
    PublishDeviceBirth,
    PublishNodeBirth,
    Rebirth,
    Send,
    Session,
    StartReplay,
    Stop,
    Subscribe,
    step,
)

NO_HOST = Session(group="plant1", node="gw1", devices=("etch1", "etch2"))
HOST = Session(group="plant1", node="gw1", devices=("etch1",), host_id="scada")


def run(s: Session, *events: object) -> tuple[Session, list[object]]:
    actions: list[object] = []
    for e in events:
        s, a = step(s, e)  # type: ignore[arg-type]
        actions.extend(a)
    return s, actions


def test_first_connect_uses_bdseq_0_persisted_before_connect() -> None:
    """tck-id-topics-nbirth-bdseq-increment: bdSeq starts at 0, is persisted, then CONNECT."""
    s, actions = step(NO_HOST, Dial())
    assert actions == [PersistBdSeq(0), Connect(0)]
    assert s.phase is Phase.CONNECTING


def test_every_connect_increments_bdseq_and_wraps_after_255() -> None:
    """tck-id-...-will-message-payload-bdSeq: each new connect takes the next bdSeq, 255 -> 0."""
    s, _ = run(Session("g", "n", bd_seq=254), Dial(), ConnectSent(), Connected(), Lost())
    assert s.bd_seq == 255
    s, actions = run(s, Dial())
    assert actions == [PersistBdSeq(0), Connect(0)]


def test_an_attempt_that_sent_no_connect_leaves_bdseq_for_the_next() -> None:
    """tck-id-topics-nbirth-bdseq-increment: bdSeq counts CONNECT packets. Attempts refused
    before their CONNECT (broker down) reuse the same bdSeq in their Will and persist
    nothing more; the CONNECT that finally goes out carries it, its NBIRTH too."""
    s, actions = run(NO_HOST, Dial(), Lost())
    assert actions == [PersistBdSeq(0), Connect(0)]
    for _ in range(300):  # a long outage: more attempts than bdSeq values
        s, actions = run(s, Dial(), Lost())
        assert actions == [Connect(0)]
    s, actions = run(s, Dial(), ConnectSent(), Connected())
    assert actions[0] == Connect(0) and PublishNodeBirth(bd_seq=0, seq=0) in actions


def test_a_connect_that_went_out_uses_its_bdseq_whatever_follows() -> None:
    """tck-id-message-flow-edge-node-birth-publish-will-message-payload-bdSeq: once a CONNECT
    went out (even refused by CONNACK or lost before the births) the next CONNECT's Will
    carries the next bdSeq, persisted before it."""
    s, _ = run(HOST, Dial(), ConnectSent(), Lost())  # CONNACK refused or timed out
    s, actions = run(s, Dial())
    assert actions == [PersistBdSeq(1), Connect(1)]
    s, _ = run(s, ConnectSent(), Connected(), Lost())  # waiting for the host, link lost
    _, actions = run(s, Dial())
    assert actions == [PersistBdSeq(2), Connect(2)]


@given(st.lists(st.sampled_from(["refused", "sent", "born"]), max_size=600))
def test_will_bdseqs_count_connect_packets_exactly(attempts: list[str]) -> None:
    """tck-id-topics-nbirth-bdseq-increment over any mix of attempts: the Wills of the
    CONNECT packets that went out carry 0, 1, 2, ... (mod 256) with no gap; every bdSeq
    a CONNECT carried was persisted before it."""
    s = HOST
    sent: list[int] = []
    persisted: int | None = None
    for kind in attempts:
        s, actions = step(s, Dial())
        for a in actions:
            if isinstance(a, PersistBdSeq):
                persisted = a.bd_seq
            elif isinstance(a, Connect):
                assert a.bd_seq == persisted
                bd = a.bd_seq
        if kind != "refused":
            s, _ = step(s, ConnectSent())
            sent.append(bd)
        if kind == "born":
            s, actions = run(s, Connected(), HostState(True, len(sent)))
            assert PublishNodeBirth(bd_seq=bd, seq=0) in actions
        s, _ = step(s, Lost())
    assert sent == [i % 256 for i in range(len(sent))]


def test_restart_continues_from_persisted_bdseq() -> None:
    """A restart with the persisted bdSeq 7 connects with 8: never a bdSeq a host still holds."""
    _, actions = step(Session("g", "n", bd_seq=7), Dial())
    assert Connect(8) in actions


def test_subscribes_ncmd_dcmd_before_the_births() -> None:
    """tck-id-message-flow-edge-node-ncmd-subscribe / device-dcmd-subscribe: subscribe first."""
    _, actions = run(NO_HOST, Dial(), Connected())
    assert actions[2] == Subscribe(("spBv1.0/plant1/NCMD/gw1", "spBv1.0/plant1/DCMD/gw1/+"))
    assert isinstance(actions[3], PublishNodeBirth)


def test_nbirth_seq_0_same_bdseq_as_will_then_dbirth_per_device() -> None:
    """tck-id-topics-nbirth-seq-num, -bdseq-matching, device-birth-publish-nbirth-wait."""
    s, actions = run(NO_HOST, Dial(), Connected())
    births = actions[3:]
    assert births == [PublishNodeBirth(bd_seq=0, seq=0), PublishDeviceBirth("etch1", 1),
                      PublishDeviceBirth("etch2", 2), StartReplay()]
    assert s.phase is Phase.BORN and s.seq == 3


def test_data_seq_increments_and_wraps_at_256() -> None:
    """tck-id-topics-ndata-seq-num / ddata-seq-num: seq 0..255 increments per message, wraps."""
    s, _ = run(NO_HOST, Dial(), Connected())
    seqs = []
    for _ in range(300):
        s, actions = step(s, Send("etch1"))
        (a,) = actions
        assert isinstance(a, PublishData)
        seqs.append(a.seq)
    assert seqs[0] == 3
    assert all(b == (a + 1) % 256 for a, b in itertools.pairwise(seqs))
    assert max(seqs) == 255 and min(seqs) == 0


def test_no_data_before_birth() -> None:
    """tck-id-principles-birth-certificates-order: nothing is published before the births."""
    for s in (NO_HOST, step(NO_HOST, Dial())[0], run(HOST, Dial(), Connected())[0]):
        assert step(s, Send())[1] == []


def test_waits_for_primary_host_online_before_birth() -> None:
    """tck-id-message-flow-edge-node-birth-publish-phid-wait(-online): no birth while offline."""
    s, actions = run(HOST, Dial(), Connected())
    assert actions[-1] == Subscribe(("spBv1.0/plant1/NCMD/gw1", "spBv1.0/plant1/DCMD/gw1/+",
                                     "spBv1.0/STATE/scada"))
    assert s.phase is Phase.WAITING_HOST
    s, actions = step(s, HostState(online=False, timestamp=100))
    assert not [a for a in actions if isinstance(a, PublishNodeBirth)]
    s, actions = step(s, HostState(online=True, timestamp=200))
    assert actions == [PublishNodeBirth(0, 0), PublishDeviceBirth("etch1", 1), StartReplay()]


def test_waiting_for_the_host_subscribes_to_its_state_again() -> None:
    """tck-id-message-flow-edge-node-birth-publish-phid-wait: a broker that acknowledged the
    STATE subscription without its retained STATE gets the subscription again on each
    wait tick, until a STATE comes (an offline one too); born, or without a host, the
    tick does nothing."""
    s, _ = run(HOST, Dial(), Connected())
    assert step(s, HostWait()) == (s, [Subscribe(("spBv1.0/STATE/scada",))])
    heard, _ = step(s, HostState(online=False, timestamp=1))
    assert step(heard, HostWait()) == (heard, [])
    again, _ = run(heard, Lost(), Dial(), Connected())  # a new connection: not heard yet
    assert step(again, HostWait())[1] == [Subscribe(("spBv1.0/STATE/scada",))]
    born, _ = step(s, HostState(online=True, timestamp=1))
    assert step(born, HostWait()) == (born, [])
    no_host, _ = run(NO_HOST, Dial(), Connected())
    assert step(no_host, HostWait()) == (no_host, [])
    assert step(HOST, HostWait()) == (HOST, [])  # not connected


def test_stale_online_state_does_not_give_a_birth() -> None:
    """tck-id-message-flow-edge-node-birth-publish-phid-wait-timestamp: older STATE ignored."""
    s, _ = run(HOST, Dial(), Connected(), HostState(online=False, timestamp=500))
    s, actions = step(s, HostState(online=True, timestamp=400))
    assert actions == [] and s.phase is Phase.WAITING_HOST


def test_host_offline_gives_ndeath_and_disconnect() -> None:
    """tck-id-message-flow-edge-node-birth-publish-phid-offline / termination-host-offline."""
    s, _ = run(HOST, Dial(), Connected(), HostState(online=True, timestamp=10))
    s, actions = step(s, HostState(online=False, timestamp=11))
    assert actions == [PublishDeath(0), Disconnect("primary host offline")]
    assert s.phase is Phase.OFFLINE
    assert step(s, Send())[1] == []


def test_stale_offline_state_is_ignored() -> None:
    """tck-id-operational-behavior-edge-node-termination-host-offline-timestamp."""
    s, _ = run(HOST, Dial(), Connected(), HostState(online=True, timestamp=10))
    s2, actions = step(s, HostState(online=False, timestamp=9))
    assert actions == [] and s2 == s


def test_reconnect_after_host_offline_waits_for_a_newer_online() -> None:
    """After host offline the node reconnects with a new bdSeq and waits for online again."""
    s, _ = run(HOST, Dial(), Connected(), HostState(True, 10), HostState(False, 11))
    s, actions = run(s, Dial(), Connected(), HostState(False, 11))
    assert Connect(1) in actions and s.phase is Phase.WAITING_HOST
    s, actions = step(s, HostState(True, 12))
    assert actions[0] == PublishNodeBirth(1, 0)


def test_rebirth_republishes_births_same_bdseq_no_reconnect() -> None:
    """Rebirth (NCMD Node Control/Rebirth): births again with seq 0 and the same bdSeq."""
    s, _ = run(NO_HOST, Dial(), Connected(), Send("etch1"), Send("etch2"))
    s, actions = step(s, Rebirth())
    assert actions == [PublishNodeBirth(0, 0), PublishDeviceBirth("etch1", 1),
                       PublishDeviceBirth("etch2", 2)]
    assert not [a for a in actions if isinstance(a, Connect | Disconnect | PersistBdSeq)]
    assert s.seq == 3


def test_rebirth_before_birth_is_ignored() -> None:
    """A rebirth request while waiting for the host publishes nothing."""
    s, _ = run(HOST, Dial(), Connected())
    assert step(s, Rebirth())[1] == []


def test_clean_shutdown_publishes_ndeath_then_disconnects() -> None:
    """tck-id-operational-behavior-edge-node-intentional-disconnect-ndeath / -packet."""
    s, _ = run(NO_HOST, Dial(), Connected())
    s, actions = step(s, Stop())
    assert actions == [PublishDeath(0), Disconnect("shutdown")]
    assert s.phase is Phase.STOPPED
    assert step(s, Dial())[1] == []


def test_shutdown_while_offline_publishes_nothing() -> None:
    """A stop with no connection has nothing to say (the broker already sent the Will)."""
    s, _ = run(NO_HOST, Dial(), Connected(), Lost())
    assert step(s, Stop())[1] == []


def test_connection_lost_stops_data_until_next_birth() -> None:
    """After a lost link data waits (in the journal) until the next connection's births."""
    s, _ = run(NO_HOST, Dial(), Connected(), Lost())
    assert step(s, Send())[1] == []
    s, actions = run(s, Dial(), Connected())
    assert PublishNodeBirth(1, 0) in actions


@given(st.lists(st.sampled_from(["dial", "conn", "on", "off", "rebirth", "send", "lost",
                                 "wait"]),
                max_size=60), st.integers(0, 255))
def test_invariants_hold_for_any_event_order(names: list[str], start: int) -> None:
    """Any event order: seq and bdSeq stay in 0..255, births precede data on a connection,
    a birth carries the bdSeq of the last CONNECT, and a NBIRTH always has seq 0."""
    s = Session("g", "n", devices=("d",), host_id="h", bd_seq=start)
    will: int | None = None
    born = False
    for ts, name in enumerate(names, start=1):
        event = {"dial": Dial(), "conn": Connected(), "on": HostState(True, ts),
                 "off": HostState(False, ts), "rebirth": Rebirth(), "send": Send("d"),
                 "lost": Lost(), "wait": HostWait()}[name]
        s, actions = step(s, event)  # type: ignore[arg-type]
        assert 0 <= s.seq <= 255 and s.bd_seq is not None and 0 <= s.bd_seq <= 255
        for a in actions:
            if isinstance(a, Connect):
                will, born = a.bd_seq, False
            elif isinstance(a, PublishNodeBirth):
                assert a.bd_seq == will and a.seq == 0
                born = True
            elif isinstance(a, PublishData):
                assert born
            elif isinstance(a, Disconnect):
                born = False
        if name == "lost":
            born = False
