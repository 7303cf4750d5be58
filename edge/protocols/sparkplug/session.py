"""The Sparkplug B edge node session as a pure state machine: ``step(state, event)``.

``step`` returns the next ``Session`` and the actions the I/O shell must carry out, in
order. It opens no socket and reads no clock: the shell feeds it events (connected,
a STATE message, a rebirth command, a lost link, a message to send) and does what the
actions say. Each rule below names the specification requirement it keeps.

Invariants:

* bdSeq counts MQTT CONNECT packets, not connection attempts
  (tck-id-topics-nbirth-bdseq-increment: "increment by one on every new MQTT CONNECT
  packet"; tck-id-message-flow-edge-node-birth-publish-will-message-payload-bdSeq: the
  Will's bdSeq is the previous CONNECT's plus one, 255 -> 0). An attempt that fails
  before its CONNECT leaves (connection refused, TCP or TLS timeout: the shell reports
  no ``ConnectSent``) does not use its bdSeq up: the next attempt's Will carries the
  same one. Once a CONNECT went out (``ConnectSent``), whatever follows (CONNACK refused
  or late, the link lost before or after the births), the next CONNECT takes the next.
* bdSeq persistence: ``Session.bd_seq`` is the last bdSeq that may have reached a broker.
  A new one is persisted (``PersistBdSeq``) BEFORE the CONNECT that carries it, so a
  restart (which starts from the persisted one plus one) never reuses a bdSeq a host
  may still hold, even after kill -9 between the CONNECT and anything else. Retrying an
  unsent one writes nothing (no write per refused attempt through a long outage); a
  restart after one skips it, which no host can notice (hosts match NDEATH to NBIRTH by
  equality).
* The Will and the NBIRTH of one connection carry the same bdSeq
  (tck-id-topics-nbirth-bdseq-matching); a rebirth keeps it, no reconnect
  (tck-id-operational-behavior-data-commands-rebirth-action-3).
* Subscriptions (NCMD, DCMD, the host's STATE) come before any birth.
* No birth before the primary host (when one is configured) is online with a STATE
  timestamp no older than the last one seen; a STATE older than the last one seen is
  ignored. Host offline after the births: NDEATH, disconnect, and wait (a new connect,
  which waits for online again). Offline while still waiting changes nothing (the
  retained offline STATE after a reconnect must not loop us through disconnects).
* A broker may acknowledge the STATE subscription without sending the retained STATE
  (a NATS cluster does, seconds after losing a node, when its retained-message stream
  has no leader yet): while no STATE has come on this connection, every ``HostWait`` (a
  timer of the shell) subscribes to the STATE topic again, which makes the broker send
  the retained one again.
* seq: NBIRTH has seq 0; every later message of the node (DBIRTHs, NDATA, DDATA) takes
  the next seq, 0..255 wrapping. NDEATH has no seq.
* Data is sent only while born (births published); otherwise ``send`` returns no
  action and the data stays in the journal for store-and-forward.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace


class Phase(enum.Enum):
    OFFLINE = "offline"          # no connection
    CONNECTING = "connecting"    # CONNECT sent with its Will
    WAITING_HOST = "waiting_host"  # connected and subscribed; the host is not online
    BORN = "born"                # births published; data flows
    STOPPED = "stopped"          # clean shutdown done


# ---------------------------------------------------------------------------- events


@dataclass(frozen=True, slots=True)
class Dial:
    """The shell is about to connect (to the next broker URL)."""


@dataclass(frozen=True, slots=True)
class ConnectSent:
    """The connection to the broker is open and the CONNECT (with its Will) went out."""


@dataclass(frozen=True, slots=True)
class Connected:
    """CONNACK accepted."""


@dataclass(frozen=True, slots=True)
class HostState:
    """A message on ``spBv1.0/STATE/{host_id}``."""

    online: bool
    timestamp: int


@dataclass(frozen=True, slots=True)
class Rebirth:
    """An NCMD ``Node Control/Rebirth = true``."""


@dataclass(frozen=True, slots=True)
class HostWait:
    """The shell's timer while connected: still no usable STATE from the primary host?"""


@dataclass(frozen=True, slots=True)
class Send:
    """Data to publish: for the node (device "") or one device."""

    device: str = ""


@dataclass(frozen=True, slots=True)
class Lost:
    """The connection dropped (the broker publishes our Will)."""


@dataclass(frozen=True, slots=True)
class Stop:
    """Clean shutdown."""


Event = Dial | ConnectSent | Connected | HostState | HostWait | Rebirth | Send | Lost | Stop

# --------------------------------------------------------------------------- actions


@dataclass(frozen=True, slots=True)
class PersistBdSeq:
    bd_seq: int


@dataclass(frozen=True, slots=True)
class Connect:
    """CONNECT with a Will: NDEATH carrying ``bd_seq``, QoS 1, not retained."""

    bd_seq: int


@dataclass(frozen=True, slots=True)
class Subscribe:
    topics: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class PublishNodeBirth:
    bd_seq: int
    seq: int = 0


@dataclass(frozen=True, slots=True)
class PublishDeviceBirth:
    device: str
    seq: int


@dataclass(frozen=True, slots=True)
class PublishData:
    device: str  # "" for NDATA
    seq: int


@dataclass(frozen=True, slots=True)
class StartReplay:
    """Births are out and the host (if any) is online: replay the journal backlog."""


@dataclass(frozen=True, slots=True)
class PublishDeath:
    bd_seq: int


@dataclass(frozen=True, slots=True)
class Disconnect:
    reason: str


Action = (PersistBdSeq | Connect | Subscribe | PublishNodeBirth | PublishDeviceBirth
          | PublishData | StartReplay | PublishDeath | Disconnect)

# ----------------------------------------------------------------------------- state


@dataclass(frozen=True, slots=True)
class Session:
    """One edge node's session. ``bd_seq`` is the last bdSeq persisted, which may have
    reached a broker (None: none ever); ``bd_unsent``: it was persisted for a CONNECT
    that never went out (known in this process only), so the next attempt reuses it."""

    group: str
    node: str
    devices: tuple[str, ...] = ()
    host_id: str = ""  # "" = no primary host awareness: birth right after subscribing
    phase: Phase = Phase.OFFLINE
    bd_seq: int | None = None
    bd_unsent: bool = False
    seq: int = 0
    host_online: bool = False
    host_ts: int = -1  # timestamp of the last STATE seen (-1: none)
    host_heard: bool = False  # a STATE came on this connection

    def topics(self) -> tuple[str, ...]:
        ns = "spBv1.0"
        subs = (f"{ns}/{self.group}/NCMD/{self.node}", f"{ns}/{self.group}/DCMD/{self.node}/+")
        return (*subs, self.state_topic()) if self.host_id else subs

    def state_topic(self) -> str:
        return f"spBv1.0/STATE/{self.host_id}"


def _births(s: Session) -> tuple[Session, list[Action]]:
    if s.bd_seq is None:  # pragma: no cover - a connection always has one (Dial)
        raise AssertionError("birth without a bdSeq")
    actions: list[Action] = [PublishNodeBirth(s.bd_seq, 0)]
    seq = 0
    for device in s.devices:
        seq = (seq + 1) % 256
        actions.append(PublishDeviceBirth(device, seq))
    return replace(s, phase=Phase.BORN, seq=(seq + 1) % 256), actions


def _connected(s: Session) -> bool:
    return s.phase in (Phase.WAITING_HOST, Phase.BORN)


def step(s: Session, event: Event) -> tuple[Session, list[Action]]:
    """The next session and the actions to carry out, in order."""
    if s.phase is Phase.STOPPED:
        return s, []
    match event:
        case Dial():
            dialing = replace(s, phase=Phase.CONNECTING, host_online=False, host_heard=False)
            if s.bd_seq is not None and s.bd_unsent:  # persisted, never sent: reuse it
                return dialing, [Connect(s.bd_seq)]
            bd = 0 if s.bd_seq is None else (s.bd_seq + 1) % 256
            return (replace(dialing, bd_seq=bd, bd_unsent=True),
                    [PersistBdSeq(bd), Connect(bd)])
        case ConnectSent():
            return replace(s, bd_unsent=False), []
        case Connected():
            if s.phase is not Phase.CONNECTING:
                return s, []
            waiting = replace(s, phase=Phase.WAITING_HOST, seq=0, bd_unsent=False)
            subscribe: list[Action] = [Subscribe(s.topics())]
            if s.host_id:
                return waiting, subscribe
            born, births = _births(waiting)
            return born, [*subscribe, *births, StartReplay()]
        case HostState(online=online, timestamp=ts):
            s = replace(s, host_heard=True)
            if ts < s.host_ts:
                return s, []  # older than one already seen: a stale retained STATE
            s = replace(s, host_online=online, host_ts=ts)
            if online and s.phase is Phase.WAITING_HOST:
                born, births = _births(s)
                return born, [*births, StartReplay()]
            if not online and s.phase is Phase.BORN:
                assert s.bd_seq is not None
                return (replace(s, phase=Phase.OFFLINE),
                        [PublishDeath(s.bd_seq), Disconnect("primary host offline")])
            return s, []
        case HostWait():
            if s.phase is Phase.WAITING_HOST and s.host_id and not s.host_heard:
                return s, [Subscribe((s.state_topic(),))]
            return s, []
        case Rebirth():
            if s.phase is not Phase.BORN:
                return s, []
            return _births(s)
        case Send(device=device):
            if s.phase is not Phase.BORN:
                return s, []
            return replace(s, seq=(s.seq + 1) % 256), [PublishData(device, s.seq)]
        case Lost():
            return replace(s, phase=Phase.OFFLINE, host_online=False), []
        case Stop():
            if _connected(s):
                assert s.bd_seq is not None
                return (replace(s, phase=Phase.STOPPED),
                        [PublishDeath(s.bd_seq), Disconnect("shutdown")])
            return replace(s, phase=Phase.STOPPED), []
    raise AssertionError(f"unknown event {event!r}")  # pragma: no cover
