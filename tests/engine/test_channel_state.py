"""The channel state machine without sockets."""

from __future__ import annotations

from dataclasses import dataclass, field

from iii.engine.channels import ChannelManager, EndState, FrameKind, KeyCheck, Role
from iii.protocol import close_codes


@dataclass
class FakeEnd:
    """A channel end that records what the relay did to it."""

    write_paused: bool = False
    frames: list[tuple[FrameKind, bytes, bool]] = field(default_factory=list)
    closed: tuple[int, str] | None = None
    reading: bool = True
    gone: bool = False
    """The peer hung up (what ``hung_up`` reports)."""

    def send_frame(self, kind: FrameKind, payload: bytes | memoryview, fin: bool) -> None:
        self.frames.append((kind, bytes(payload), fin))

    def close(self, code: int, reason: str) -> None:
        if self.closed is None:
            self.closed = (code, reason)

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def hung_up(self) -> bool:
        return self.gone


def make_manager(now: list[float] | None = None, **overrides: int | float) -> ChannelManager:
    clock = now or [0.0]
    settings = {"default_buffer_frames": 4, "max_buffer_frames": 1024, "buffer_bytes": 1000, "ttl_s": 60.0}
    settings.update(overrides)
    return ChannelManager(clock=lambda: clock[0], **settings)  # type: ignore[arg-type]


def connect(manager: ChannelManager, role: Role, channel_id: str, key: str) -> FakeEnd:
    outcome, channel = manager.check(channel_id, key, role)
    assert outcome is KeyCheck.OK and channel is not None
    manager.take(channel, role)
    end = FakeEnd()
    channel.attach(role, end)
    return end


def test_keys_open_only_their_own_direction() -> None:
    manager = make_manager()
    channel = manager.create(None, owner_id="w")
    assert channel.writer_key != channel.reader_key
    assert manager.check(channel.channel_id, channel.reader_key, Role.WRITER)[0] is KeyCheck.WRONG_DIRECTION
    assert manager.check(channel.channel_id, channel.writer_key, Role.READER)[0] is KeyCheck.WRONG_DIRECTION
    assert manager.check(channel.channel_id, "nope", Role.READER)[0] is KeyCheck.NOT_FOUND
    assert manager.check("unknown", channel.reader_key, Role.READER)[0] is KeyCheck.NOT_FOUND
    connect(manager, Role.READER, channel.channel_id, channel.reader_key)
    assert manager.check(channel.channel_id, channel.reader_key, Role.READER)[0] is KeyCheck.TAKEN


def test_buffer_size_is_clamped_like_the_reference() -> None:
    manager = make_manager(max_buffer_frames=1024)
    assert manager.create(0, None).buffer_frames == 1
    assert manager.create(5000, None).buffer_frames == 1024
    assert manager.create(None, None).buffer_frames == 4


def test_frames_written_before_the_reader_connects_arrive_in_order_then_a_clean_end() -> None:
    manager = make_manager()
    channel = manager.create(None, None)
    writer = connect(manager, Role.WRITER, channel.channel_id, channel.writer_key)
    channel.on_writer_frame(FrameKind.BINARY, b"one", True)
    channel.on_writer_frame(FrameKind.TEXT, b"note", True)
    channel.on_writer_frame(FrameKind.BINARY, b"two", True)
    channel.on_writer_end(close_codes.NORMAL, "done")
    assert writer.closed is None  # the engine answers the writer's close in the socket layer
    reader = connect(manager, Role.READER, channel.channel_id, channel.reader_key)
    assert reader.frames == [
        (FrameKind.BINARY, b"one", True),
        (FrameKind.TEXT, b"note", True),
        (FrameKind.BINARY, b"two", True),
    ]
    assert reader.closed is not None and reader.closed[0] == close_codes.NORMAL
    assert len(manager) == 0  # finished channels are forgotten: their keys open nothing
    assert manager.check(channel.channel_id, channel.reader_key, Role.READER)[0] is KeyCheck.NOT_FOUND


def test_a_lost_writer_never_looks_like_a_clean_end() -> None:
    manager = make_manager()
    channel = manager.create(None, None)
    reader = connect(manager, Role.READER, channel.channel_id, channel.reader_key)
    connect(manager, Role.WRITER, channel.channel_id, channel.writer_key)
    channel.on_writer_frame(FrameKind.BINARY, b"partial", True)
    channel.on_writer_end(close_codes.WRITER_LOST, "the writer disconnected")
    assert reader.frames == [(FrameKind.BINARY, b"partial", True)]
    assert reader.closed == (close_codes.WRITER_LOST, "the writer disconnected")


def test_a_full_buffer_pauses_the_writer_until_the_reader_drains() -> None:
    manager = make_manager(default_buffer_frames=2)
    channel = manager.create(None, None)
    writer = connect(manager, Role.WRITER, channel.channel_id, channel.writer_key)
    channel.on_writer_frame(FrameKind.BINARY, b"a", True)
    assert writer.reading
    channel.on_writer_frame(FrameKind.BINARY, b"b", True)
    assert not writer.reading
    assert manager.stalls == 1
    reader = connect(manager, Role.READER, channel.channel_id, channel.reader_key)
    assert [f[1] for f in reader.frames] == [b"a", b"b"]
    assert writer.reading


def test_the_byte_budget_pauses_the_writer_too() -> None:
    manager = make_manager(default_buffer_frames=100, buffer_bytes=10)
    channel = manager.create(None, None)
    writer = connect(manager, Role.WRITER, channel.channel_id, channel.writer_key)
    channel.on_writer_frame(FrameKind.BINARY, b"x" * 6, True)
    assert writer.reading
    channel.on_writer_frame(FrameKind.BINARY, b"y" * 6, True)
    assert not writer.reading
    assert channel.queued_bytes == 12


def test_a_reader_that_cannot_keep_up_gets_frames_queued_not_dropped() -> None:
    manager = make_manager(default_buffer_frames=3)
    channel = manager.create(None, None)
    reader = connect(manager, Role.READER, channel.channel_id, channel.reader_key)
    writer = connect(manager, Role.WRITER, channel.channel_id, channel.writer_key)
    reader.write_paused = True
    for index in range(3):
        channel.on_writer_frame(FrameKind.BINARY, bytes([index]), True)
    assert reader.frames == [] and not writer.reading
    reader.write_paused = False
    channel.on_reader_writable()
    assert [f[1] for f in reader.frames] == [b"\x00", b"\x01", b"\x02"]
    assert writer.reading


def test_a_vanished_reader_fails_the_writer_and_frees_the_channel() -> None:
    manager = make_manager()
    channel = manager.create(None, None)
    writer = connect(manager, Role.WRITER, channel.channel_id, channel.writer_key)
    connect(manager, Role.READER, channel.channel_id, channel.reader_key)
    channel.on_reader_gone("disconnected")
    assert writer.closed is not None and writer.closed[0] == close_codes.READER_LOST
    assert len(manager) == 0


def test_an_end_that_never_connects_expires_and_the_other_end_is_told() -> None:
    now = [0.0]
    manager = make_manager(now, ttl_s=10.0)
    lonely_reader = manager.create(None, None)
    lonely_writer = manager.create(None, None)
    untouched = manager.create(None, None)
    reader = connect(manager, Role.READER, lonely_reader.channel_id, lonely_reader.reader_key)
    writer = connect(manager, Role.WRITER, lonely_writer.channel_id, lonely_writer.writer_key)
    now[0] = 9.0
    assert manager.expire_due() == 0
    now[0] = 10.5
    assert manager.expire_due() == 3
    assert reader.closed is not None and reader.closed[0] == close_codes.PEER_NEVER_CONNECTED
    assert writer.closed is not None and writer.closed[0] == close_codes.PEER_NEVER_CONNECTED
    assert len(manager) == 0
    assert untouched.writer_state is EndState.DONE


def test_connected_channels_do_not_expire() -> None:
    now = [0.0]
    manager = make_manager(now, ttl_s=10.0)
    channel = manager.create(None, None)
    connect(manager, Role.WRITER, channel.channel_id, channel.writer_key)
    connect(manager, Role.READER, channel.channel_id, channel.reader_key)
    now[0] = 100.0
    assert manager.expire_due() == 0
    assert len(manager) == 1


def test_a_departed_owner_takes_its_never_connected_channels_along() -> None:
    manager = make_manager()
    unused = manager.create(None, "w1")
    used = manager.create(None, "w1")
    other = manager.create(None, "w2")
    connect(manager, Role.WRITER, used.channel_id, used.writer_key)
    assert manager.forget_unconnected_of("w1") == 1
    assert manager.check(unused.channel_id, unused.reader_key, Role.READER)[0] is KeyCheck.NOT_FOUND
    assert len(manager) == 2 and other.channel_id in {c.channel_id for c in manager}


def test_listing_never_shows_keys() -> None:
    manager = make_manager()
    channel = manager.create(None, "w")
    text = repr(manager.describe())
    assert channel.channel_id in text
    assert channel.writer_key not in text and channel.reader_key not in text


def test_readers_get_data_in_frames_of_at_most_64_kib_whatever_the_writer_sent() -> None:
    """A writer's 200 KiB frame and a fragmented binary message reach the reader as whole frames of <= 64 KiB
    (the official Python reader refuses messages over 1 MiB); a fragmented text message passes as it came."""
    manager = make_manager(buffer_bytes=10 * 1024 * 1024)
    channel = manager.create(None, owner_id="w")
    writer = connect(manager, Role.WRITER, channel.channel_id, channel.writer_key)
    big = bytes(range(256)) * 800  # 200 KiB
    channel.on_writer_frame(FrameKind.BINARY, big, True)  # queued: no reader yet
    reader = connect(manager, Role.READER, channel.channel_id, channel.reader_key)
    channel.on_writer_frame(FrameKind.BINARY, memoryview(big), True)  # relayed at once
    channel.on_writer_frame(FrameKind.BINARY, big[:100_000], False)
    channel.on_writer_frame(FrameKind.CONTINUATION, big[100_000:], False)
    channel.on_writer_frame(FrameKind.CONTINUATION, b"", True)
    channel.on_writer_frame(FrameKind.TEXT, b'{"half":', False)
    channel.on_writer_frame(FrameKind.CONTINUATION, b'"one"}', True)
    channel.on_writer_end(close_codes.NORMAL, "done")

    data = [frame for frame in reader.frames if frame[0] is FrameKind.BINARY]
    assert all(len(payload) <= 64 * 1024 and fin for _, payload, fin in data)
    assert b"".join(payload for _, payload, _ in data) == big * 3
    assert [len(payload) for _, payload, _ in data[:4]] == [65536, 65536, 65536, 8192]
    text = [(FrameKind.TEXT, b'{"half":', False), (FrameKind.CONTINUATION, b'"one"}', True)]
    assert reader.frames[len(data) :] == text
    assert reader.closed == (close_codes.NORMAL, "done")
    assert channel.bytes_relayed == 3 * len(big) + 14
    assert writer.closed is None


def test_a_held_back_writer_that_hung_up_is_read_to_its_end() -> None:
    """A writer paused by backpressure whose peer hung up is read without backpressure (what it left is bounded
    by the socket's buffer), so its end is known at once instead of when a reader catches up."""
    manager = make_manager(buffer_bytes=10_000, default_buffer_frames=2)
    channel = manager.create(None, owner_id="w")
    other = manager.create(None, owner_id="w")
    writer = connect(manager, Role.WRITER, channel.channel_id, channel.writer_key)
    live = connect(manager, Role.WRITER, other.channel_id, other.writer_key)
    for payload in (b"a", b"b"):
        channel.on_writer_frame(FrameKind.BINARY, payload, True)
        other.on_writer_frame(FrameKind.BINARY, payload, True)
    assert not writer.reading and not live.reading and manager.held_back == {channel, other}
    writer.gone = True
    assert manager.read_departed_writers() == [channel]
    assert writer.reading and not live.reading  # only the one that hung up
    channel.on_writer_frame(FrameKind.BINARY, b"c", True)  # past the buffer: no pause now
    assert writer.reading
    channel.on_writer_end(close_codes.WRITER_LOST, "the writer disconnected before ending the stream")
    assert channel.writer_state is EndState.DONE and manager.held_back == {other}
    reader = connect(manager, Role.READER, channel.channel_id, channel.reader_key)
    assert [payload for _, payload, _ in reader.frames] == [b"a", b"b", b"c"]
    assert reader.closed is not None and reader.closed[0] == close_codes.WRITER_LOST


def test_released_ends_tell_their_peers() -> None:
    """An end its holder will never use is released: a reader fails its writer (now, or when it connects),
    a writer ends its reader's stream as lost after what was queued; connected ends are not released."""
    manager = make_manager()
    # A released reader, its writer connected: 4002 at once.
    first = manager.create(None, owner_id="w")
    writer = connect(manager, Role.WRITER, first.channel_id, first.writer_key)
    assert first.release(Role.READER, "handler returned")
    assert writer.closed is not None and writer.closed[0] == close_codes.READER_LOST
    assert manager.find(first.channel_id, first.reader_key) is None  # forgotten
    # A released reader, its writer connecting later: 4002 when it attaches.
    second = manager.create(None, owner_id="w")
    assert second.release(Role.READER, "handler returned")
    late = connect(manager, Role.WRITER, second.channel_id, second.writer_key)
    assert late.closed is not None and late.closed[0] == close_codes.READER_LOST
    # A released writer: the reader's stream ends unclean (4004: nothing will come).
    third = manager.create(None, owner_id="w")
    reader = connect(manager, Role.READER, third.channel_id, third.reader_key)
    assert third.release(Role.WRITER, "handler returned")
    assert reader.closed is not None and reader.closed[0] == close_codes.WRITER_RELEASED
    # Connected or finished ends are not released.
    fourth = manager.create(None, owner_id="w")
    connect(manager, Role.READER, fourth.channel_id, fourth.reader_key)
    assert not fourth.release(Role.READER, "no")
    found = manager.find(fourth.channel_id, fourth.writer_key)
    assert found is not None and found[1] is Role.WRITER
    assert manager.find(fourth.channel_id, "wrong") is None


def test_an_end_whose_handshake_never_completes_still_expires() -> None:
    """A reader whose key was presented (its end reserved) but whose socket never attached: the channel stays
    under the TTL, so the writer is told and the channel is forgotten, instead of being held for ever."""
    now = [0.0]
    manager = make_manager(now, ttl_s=10.0)
    channel = manager.create(None, None)
    outcome, found = manager.check(channel.channel_id, channel.reader_key, Role.READER)
    assert outcome is KeyCheck.OK and found is channel
    manager.take(channel, Role.READER)  # the upgrade was routed; its handshake never finishes
    writer = connect(manager, Role.WRITER, channel.channel_id, channel.writer_key)
    now[0] = 10.5
    assert manager.expire_due() == 1
    assert writer.closed is not None and writer.closed[0] == close_codes.PEER_NEVER_CONNECTED
    assert len(manager) == 0
