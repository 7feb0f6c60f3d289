//! The connection state machine on in-memory streams.

use super::*;
use crate::devices::virtio::vsock::packet::op;
use crate::devices::virtio::vsock::testing::{guest_hdr, rw_hdr, slice, MockStream};

const LOCAL: u32 = FIRST_LOCAL;
const FIRST_LOCAL: u32 = 1 << 30;
const GUEST_PORT: u32 = 1024;

fn now() -> Instant {
    Instant::now()
}

/// Takes the next packet the connection has for the guest, with a 4 KiB
/// rx buffer.
fn rx(c: &mut Connection<MockStream>) -> Option<(Header, Vec<u8>)> {
    rx_with(c, 4096)
}

fn rx_with(c: &mut Connection<MockStream>, buf_len: usize) -> Option<(Header, Vec<u8>)> {
    let mut buf = vec![0u8; buf_len];
    let mut hdr = Header::default();
    let len = c
        .fill_rx(&mut hdr, &slice(&mut buf), now())
        .expect("no close")?;
    assert_eq!(hdr.len, len);
    buf.truncate(len as usize);
    Some((hdr, buf))
}

fn guest_send(c: &mut Connection<MockStream>, data: &[u8]) -> Result<GuestOutcome, Close> {
    let mut copy = data.to_vec();
    let hdr = rw_hdr(GUEST_PORT, LOCAL, data.len());
    c.on_guest_packet(&hdr, Some(&slice(&mut copy)), now())
}

fn guest_op(c: &mut Connection<MockStream>, op: u16) -> Result<GuestOutcome, Close> {
    c.on_guest_packet::<()>(&guest_hdr(op, GUEST_PORT, LOCAL), None, now())
}

fn guest_shutdown(c: &mut Connection<MockStream>, flags: u32) -> Result<GuestOutcome, Close> {
    let hdr = Header {
        flags,
        ..guest_hdr(op::SHUTDOWN, GUEST_PORT, LOCAL)
    };
    c.on_guest_packet::<()>(&hdr, None, now())
}

/// A host-initiated connection taken through the handshake.
fn established() -> (Connection<MockStream>, MockStream) {
    let host = MockStream::default();
    let mut c = Connection::host(host.clone(), now());
    host.feed(b"CONNECT 1024\n");
    assert_eq!(
        c.on_host_event(EventSet::IN),
        Ok(HostOutcome::Connect(GUEST_PORT))
    );
    c.start_local_init(LOCAL, GUEST_PORT);
    let (req, _) = rx(&mut c).unwrap();
    assert_eq!(req.op, op::REQUEST);
    assert_eq!(guest_op(&mut c, op::RESPONSE), Ok(GuestOutcome::Consumed));
    assert_eq!(host.take_output(), b"OK 1073741824\n");
    (c, host)
}

#[test]
fn host_initiated_handshake() {
    let host = MockStream::default();
    let t0 = now();
    let mut c = Connection::host(host.clone(), t0);
    assert_eq!(c.key(), None);
    assert_eq!(c.wanted_epoll(), Some(EventSet::IN));
    assert_eq!(c.deadline(), Some(t0 + CONNECT_TIMEOUT));

    // The line arrives in pieces; bytes after the newline stay unread.
    host.feed(b"CONN");
    assert_eq!(c.on_host_event(EventSet::IN), Ok(HostOutcome::Continue));
    host.feed(b"ECT 1024\nearly");
    assert_eq!(
        c.on_host_event(EventSet::IN),
        Ok(HostOutcome::Connect(1024))
    );
    assert_eq!(host.state().input.len(), 5);

    c.start_local_init(LOCAL, 1024);
    assert_eq!(c.key(), Some((LOCAL, 1024)));
    assert_eq!(c.deadline(), None);
    assert!(c.has_rx_work());
    // Only hang-ups are watched until the guest answers.
    assert_eq!(c.wanted_epoll(), Some(EventSet::empty()));

    let (req, data) = rx(&mut c).unwrap();
    assert!(data.is_empty());
    assert_eq!(
        (req.src_port, req.dst_port, req.op),
        (LOCAL, 1024, op::REQUEST)
    );
    assert_eq!(
        (req.type_, req.buf_alloc, req.fwd_cnt),
        (TYPE_STREAM, TX_BUF_SIZE, 0)
    );
    assert!(c.deadline().is_some(), "waiting for the response");
    assert!(rx(&mut c).is_none());
    assert!(
        host.take_output().is_empty(),
        "no OK before the guest accepts"
    );

    assert_eq!(guest_op(&mut c, op::RESPONSE), Ok(GuestOutcome::Consumed));
    assert!(c.is_established());
    assert_eq!(c.deadline(), None);
    assert_eq!(host.take_output(), b"OK 1073741824\n");
    // The early bytes flow now, after the OK line.
    assert_eq!(c.wanted_epoll(), Some(EventSet::IN));
    c.on_host_event(EventSet::IN).unwrap();
    let (pkt, data) = rx(&mut c).unwrap();
    assert_eq!((pkt.op, data.as_slice()), (op::RW, &b"early"[..]));
}

#[test]
fn the_ok_line_waits_for_a_slow_host_and_is_not_guest_credit() {
    let host = MockStream::default();
    let mut c = Connection::host(host.clone(), now());
    host.feed(b"CONNECT 1024\n");
    c.on_host_event(EventSet::IN).unwrap();
    c.start_local_init(LOCAL, GUEST_PORT);
    rx(&mut c).unwrap();
    host.state().room = 3;
    guest_op(&mut c, op::RESPONSE).unwrap();
    assert_eq!(host.take_output(), b"OK ");
    assert_eq!(c.wanted_epoll(), Some(EventSet::IN | EventSet::OUT));
    // Guest data queues behind the rest of the line.
    assert_eq!(guest_send(&mut c, b"abc"), Ok(GuestOutcome::Consumed));
    host.state().room = usize::MAX;
    c.on_host_event(EventSet::OUT).unwrap();
    assert_eq!(host.take_output(), b"1073741824\nabc");
    host.feed(b"x");
    c.on_host_event(EventSet::IN).unwrap();
    let (pkt, _) = rx(&mut c).unwrap();
    assert_eq!(pkt.fwd_cnt, 3, "only guest bytes count");
}

#[test]
fn bad_connect_lines_close_without_telling_the_guest() {
    for line in [&b"CONNECT x\n"[..], b"HELLO\n", &[b' '; 40]] {
        let host = MockStream::default();
        let mut c = Connection::host(host.clone(), now());
        host.feed(line);
        assert_eq!(
            c.on_host_event(EventSet::IN),
            Err(Close { rst: false }),
            "{line:?}"
        );
    }
    // EOF (or a hang-up) before the newline.
    let host = MockStream::default();
    let mut c = Connection::host(host.clone(), now());
    host.feed(b"CONNECT 1");
    host.state().eof = true;
    assert_eq!(
        c.on_host_event(EventSet::IN | EventSet::HANG_UP),
        Err(Close { rst: false })
    );
    // Errors on the stream.
    let mut c = Connection::host(MockStream::default(), now());
    assert_eq!(c.on_host_event(EventSet::ERROR), Err(Close { rst: false }));
}

#[test]
fn guest_initiated_handshake() {
    let host = MockStream::default();
    let req = Header {
        buf_alloc: 1000,
        fwd_cnt: 0,
        ..guest_hdr(op::REQUEST, 777, 5000)
    };
    let mut c = Connection::guest(host.clone(), &req);
    assert_eq!(c.key(), Some((5000, 777)));
    let (resp, _) = rx(&mut c).unwrap();
    assert_eq!(
        (resp.op, resp.src_port, resp.dst_port),
        (op::RESPONSE, 5000, 777)
    );
    assert_eq!(resp.buf_alloc, TX_BUF_SIZE);
    assert_eq!(c.peer_credit(), 1000);
    assert!(rx(&mut c).is_none());
    // Nothing is written to the host for a guest-initiated connection.
    assert!(host.take_output().is_empty());
}

#[test]
fn data_both_ways() {
    let (mut c, host) = established();
    assert_eq!(guest_send(&mut c, b"hello"), Ok(GuestOutcome::Consumed));
    assert_eq!(host.take_output(), b"hello");
    assert_eq!(c.wanted_epoll(), Some(EventSet::IN));

    host.feed(b"world");
    c.on_host_event(EventSet::IN).unwrap();
    assert!(c.has_rx_work());
    // Reading waits for an rx buffer: epoll stops reporting meanwhile.
    assert_eq!(c.wanted_epoll(), Some(EventSet::empty()));
    let (pkt, data) = rx(&mut c).unwrap();
    assert_eq!(data, b"world");
    assert_eq!(
        (pkt.op, pkt.src_port, pkt.dst_port),
        (op::RW, LOCAL, GUEST_PORT)
    );
    assert_eq!(pkt.fwd_cnt, 5);
    // A short read means drained: back to epoll.
    assert!(!c.has_rx_work());
    assert_eq!(c.wanted_epoll(), Some(EventSet::IN));

    // Empty RW packets are fine.
    assert_eq!(guest_send(&mut c, b""), Ok(GuestOutcome::Consumed));
}

#[test]
fn reads_never_exceed_the_guest_credit() {
    let (mut c, host) = established();
    // The guest offers 8 bytes of buffer.
    let hdr = Header {
        buf_alloc: 8,
        ..guest_hdr(op::CREDIT_UPDATE, GUEST_PORT, LOCAL)
    };
    c.on_guest_packet::<()>(&hdr, None, now()).unwrap();
    host.feed(&[7u8; 20]);
    c.on_host_event(EventSet::IN).unwrap();
    let (pkt, data) = rx(&mut c).unwrap();
    assert_eq!((pkt.op, data.len()), (op::RW, 8));
    assert_eq!(c.peer_credit(), 0);
    // Out of credit: ask once, stop reading, stop watching.
    let (pkt, _) = rx(&mut c).unwrap();
    assert_eq!(pkt.op, op::CREDIT_REQUEST);
    assert!(rx(&mut c).is_none());
    assert!(!c.has_rx_work());
    assert_eq!(c.wanted_epoll(), Some(EventSet::empty()));
    let reads = host.state().reads;

    // The guest consumed 5 bytes.
    let hdr = Header {
        buf_alloc: 8,
        fwd_cnt: 5,
        ..guest_hdr(op::CREDIT_UPDATE, GUEST_PORT, LOCAL)
    };
    c.on_guest_packet::<()>(&hdr, None, now()).unwrap();
    assert_eq!(c.peer_credit(), 5);
    let (_, data) = rx(&mut c).unwrap();
    assert_eq!(data.len(), 5);
    assert_eq!(host.state().reads, reads + 1);
    let (pkt, _) = rx(&mut c).unwrap();
    assert_eq!(
        pkt.op,
        op::CREDIT_REQUEST,
        "asks again after new credit ran out"
    );

    // A guest claiming more consumed than sent gets no credit out of it.
    let hdr = Header {
        buf_alloc: 8,
        fwd_cnt: 1000,
        ..guest_hdr(op::CREDIT_UPDATE, GUEST_PORT, LOCAL)
    };
    c.on_guest_packet::<()>(&hdr, None, now()).unwrap();
    assert_eq!(c.peer_credit(), 0);

    // A big buffer and big credit: one packet never exceeds MAX_PKT_DATA.
    let hdr = Header {
        buf_alloc: u32::MAX,
        fwd_cnt: 13,
        ..guest_hdr(op::CREDIT_UPDATE, GUEST_PORT, LOCAL)
    };
    c.on_guest_packet::<()>(&hdr, None, now()).unwrap();
    host.feed(&vec![1u8; 100_000]);
    let (_, data) = rx_with(&mut c, 200_000).unwrap();
    assert_eq!(data.len(), MAX_PKT_DATA as usize);
}

#[test]
fn a_slow_host_buffers_up_to_the_credit_then_stalls_the_guest() {
    let (mut c, host) = established();
    host.state().room = 1000;
    let chunk = vec![9u8; MAX_PKT_DATA as usize];
    assert_eq!(guest_send(&mut c, &chunk), Ok(GuestOutcome::Consumed));
    assert_eq!(c.buffered(), chunk.len() - 1000);
    assert_eq!(c.wanted_epoll(), Some(EventSet::IN | EventSet::OUT));
    host.state().room = 0;
    // Four full packets are the whole window (the 1000 bytes written free
    // room for more than that, but not for a fifth packet).
    for _ in 0..3 {
        assert_eq!(guest_send(&mut c, &chunk), Ok(GuestOutcome::Consumed));
    }
    assert_eq!(c.buffered(), 4 * chunk.len() - 1000);
    assert_eq!(guest_send(&mut c, &chunk), Ok(GuestOutcome::Stall));
    assert_eq!(
        c.buffered(),
        4 * chunk.len() - 1000,
        "a stalled packet is not taken"
    );
    assert!(!c.take_tx_progress());
    // The guest heard of no progress yet: no credit update.
    assert!(rx(&mut c).is_none());

    host.state().room = usize::MAX;
    c.on_host_event(EventSet::OUT).unwrap();
    assert_eq!(c.buffered(), 0);
    assert!(c.take_tx_progress());
    assert_eq!(host.take_output().len(), 4 * chunk.len());
    assert_eq!(c.wanted_epoll(), Some(EventSet::IN));
    let (pkt, _) = rx(&mut c).unwrap();
    assert_eq!(pkt.op, op::CREDIT_UPDATE);
    assert_eq!(pkt.fwd_cnt, 4 * MAX_PKT_DATA);
    assert_eq!(pkt.buf_alloc, TX_BUF_SIZE);
    assert!(rx(&mut c).is_none());
    assert_eq!(guest_send(&mut c, &chunk), Ok(GuestOutcome::Consumed));
}

#[test]
fn credit_updates_follow_a_fast_host() {
    let (mut c, host) = established();
    let chunk = vec![1u8; 32 * 1024];
    // Until the guest believes less than half the window is free: quiet.
    for _ in 0..4 {
        guest_send(&mut c, &chunk).unwrap();
        assert!(rx(&mut c).is_none());
    }
    guest_send(&mut c, &chunk).unwrap();
    let (pkt, _) = rx(&mut c).unwrap();
    assert_eq!((pkt.op, pkt.fwd_cnt), (op::CREDIT_UPDATE, 5 * 32 * 1024));
    assert_eq!(host.take_output().len(), 5 * chunk.len());
    // The guest asks: it is told.
    guest_op(&mut c, op::CREDIT_REQUEST).unwrap();
    let (pkt, _) = rx(&mut c).unwrap();
    assert_eq!(pkt.op, op::CREDIT_UPDATE);
    // Data for the guest carries the same news.
    guest_op(&mut c, op::CREDIT_REQUEST).unwrap();
    host.feed(b"x");
    c.on_host_event(EventSet::IN).unwrap();
    let (pkt, _) = rx(&mut c).unwrap();
    assert_eq!(pkt.op, op::RW);
    assert!(rx(&mut c).is_none());
}

#[test]
fn host_eof_then_hangup_shut_the_guest_down() {
    let (mut c, host) = established();
    host.feed(b"last");
    host.state().eof = true;
    c.on_host_event(EventSet::IN).unwrap();
    let (_, data) = rx(&mut c).unwrap();
    assert_eq!(data, b"last");
    // A short read went back to epoll, which reports the EOF as readable.
    assert_eq!(c.wanted_epoll(), Some(EventSet::IN));
    c.on_host_event(EventSet::IN).unwrap();
    let (pkt, _) = rx(&mut c).unwrap();
    assert_eq!((pkt.op, pkt.flags), (op::SHUTDOWN, shutdown::SEND));
    assert!(rx(&mut c).is_none());
    assert_eq!(c.wanted_epoll(), Some(EventSet::empty()), "no IN after EOF");
    // The guest may still send.
    guest_send(&mut c, b"more").unwrap();
    assert_eq!(host.take_output(), b"more");
    // The host closes completely.
    c.on_host_event(EventSet::HANG_UP).unwrap();
    assert_eq!(c.wanted_epoll(), None);
    let (pkt, _) = rx(&mut c).unwrap();
    assert_eq!((pkt.op, pkt.flags), (op::SHUTDOWN, shutdown::BOTH));
    assert!(c.deadline().is_some(), "waits for the guest's RST");
    assert_eq!(guest_send(&mut c, b"late"), Err(Close { rst: true }));
}

#[test]
fn a_hangup_drains_without_epoll() {
    let (mut c, host) = established();
    host.feed(&[5u8; 6000]);
    host.state().eof = true;
    c.on_host_event(EventSet::IN | EventSet::HANG_UP).unwrap();
    assert_eq!(c.wanted_epoll(), None);
    assert_eq!(rx(&mut c).unwrap().1.len(), 4096);
    assert_eq!(rx(&mut c).unwrap().1.len(), 6000 - 4096);
    let (pkt, _) = rx(&mut c).unwrap();
    assert_eq!((pkt.op, pkt.flags), (op::SHUTDOWN, shutdown::BOTH));
    assert!(rx(&mut c).is_none());
    assert!(!c.has_rx_work());
    // The guest's RST ends it, without an RST back.
    assert_eq!(guest_op(&mut c, op::RST), Err(Close { rst: false }));
}

#[test]
fn a_hangup_with_undelivered_guest_data_resets() {
    let (mut c, host) = established();
    host.state().room = 0;
    guest_send(&mut c, b"stuck").unwrap();
    host.state().write_error = Some(io::ErrorKind::BrokenPipe);
    assert_eq!(
        c.on_host_event(EventSet::HANG_UP | EventSet::OUT),
        Err(Close { rst: true })
    );
}

#[test]
fn guest_shutdown_flags() {
    // SEND: the host reads EOF once the buffer is flushed.
    let (mut c, host) = established();
    host.state().room = 2;
    guest_send(&mut c, b"abcd").unwrap();
    guest_shutdown(&mut c, shutdown::SEND).unwrap();
    assert!(!host.state().write_shut, "data first");
    host.state().room = usize::MAX;
    c.on_host_event(EventSet::OUT).unwrap();
    assert_eq!(host.take_output(), b"abcd");
    assert!(host.state().write_shut);
    // Data the other way still flows.
    host.feed(b"reply");
    c.on_host_event(EventSet::IN).unwrap();
    assert_eq!(rx(&mut c).unwrap().1, b"reply");
    // More guest data after SEND is a protocol error.
    assert_eq!(guest_send(&mut c, b"x"), Err(Close { rst: true }));

    // RCV: the host is no longer read.
    let (mut c, host) = established();
    guest_shutdown(&mut c, shutdown::RCV).unwrap();
    let reads = host.state().reads;
    host.feed(b"unwanted");
    c.on_host_event(EventSet::IN).unwrap();
    assert!(rx(&mut c).is_none());
    assert_eq!(c.wanted_epoll(), Some(EventSet::empty()));
    assert_eq!(host.state().reads, reads);
    // Both (RCV now, SEND later): flushed, so the guest gets its RST.
    assert_eq!(
        guest_shutdown(&mut c, shutdown::SEND),
        Err(Close { rst: true })
    );
    assert!(host.state().write_shut);

    // Both with data still buffered: flush first, with a deadline.
    let (mut c, host) = established();
    host.state().room = 0;
    guest_send(&mut c, b"tail").unwrap();
    let t = now();
    let hdr = Header {
        flags: shutdown::BOTH,
        ..guest_hdr(op::SHUTDOWN, GUEST_PORT, LOCAL)
    };
    assert_eq!(
        c.on_guest_packet::<()>(&hdr, None, t),
        Ok(GuestOutcome::Consumed)
    );
    assert_eq!(c.deadline(), Some(t + CLOSE_TIMEOUT));
    host.state().room = usize::MAX;
    assert_eq!(c.on_host_event(EventSet::OUT), Err(Close { rst: true }));
    assert_eq!(host.take_output(), b"tail");
    assert!(host.state().write_shut);

    // ... or give up when the host never reads.
    let (mut c, host) = established();
    host.state().room = 0;
    guest_send(&mut c, b"tail").unwrap();
    guest_shutdown(&mut c, shutdown::BOTH).unwrap();
    assert_eq!(c.on_deadline(now()), None);
    assert_eq!(
        c.on_deadline(now() + CLOSE_TIMEOUT),
        Some(Close { rst: true })
    );

    // Unknown flag bits are ignored.
    let (mut c, _) = established();
    assert_eq!(
        guest_shutdown(&mut c, 0xffff_fffc),
        Ok(GuestOutcome::Consumed)
    );
    assert!(c.is_established());
}

#[test]
fn rst_and_protocol_errors() {
    // RST from the guest, in any state, ends it quietly.
    let (mut c, _) = established();
    assert_eq!(guest_op(&mut c, op::RST), Err(Close { rst: false }));
    let host = MockStream::default();
    let mut c = Connection::host(host.clone(), now());
    host.feed(b"CONNECT 9\n");
    c.on_host_event(EventSet::IN).unwrap();
    c.start_local_init(LOCAL, 9);
    rx(&mut c).unwrap();
    assert_eq!(
        guest_op(&mut c, op::RST),
        Err(Close { rst: false }),
        "nobody listens"
    );

    // Out-of-place ops reset.
    for bad in [op::REQUEST, op::RESPONSE, 0, 8, 0xffff] {
        let (mut c, _) = established();
        assert_eq!(guest_op(&mut c, bad), Err(Close { rst: true }), "op {bad}");
    }
    let host = MockStream::default();
    let mut c = Connection::host(host.clone(), now());
    host.feed(b"CONNECT 9\n");
    c.on_host_event(EventSet::IN).unwrap();
    c.start_local_init(LOCAL, 9);
    // A response before the request went out: the guest cannot know us.
    assert_eq!(guest_op(&mut c, op::RESPONSE), Err(Close { rst: false }));

    let host = MockStream::default();
    let mut c = Connection::host(host.clone(), now());
    host.feed(b"CONNECT 9\n");
    c.on_host_event(EventSet::IN).unwrap();
    c.start_local_init(LOCAL, 9);
    rx(&mut c).unwrap();
    assert_eq!(guest_send(&mut c, b"early"), Err(Close { rst: true }));

    // A length without data.
    let (mut c, _) = established();
    let hdr = rw_hdr(GUEST_PORT, LOCAL, 10);
    assert_eq!(
        c.on_guest_packet::<()>(&hdr, None, now()),
        Err(Close { rst: true })
    );
}

#[test]
fn host_stream_errors_reset() {
    let (mut c, host) = established();
    host.state().write_error = Some(io::ErrorKind::ConnectionReset);
    assert_eq!(guest_send(&mut c, b"x"), Err(Close { rst: true }));

    let (mut c, host) = established();
    host.state().read_error = Some(io::ErrorKind::ConnectionReset);
    c.on_host_event(EventSet::IN).unwrap();
    let mut buf = [0u8; 16];
    let mut hdr = Header::default();
    assert_eq!(
        c.fill_rx(&mut hdr, &slice(&mut buf), now()),
        Err(Close { rst: true })
    );

    let (mut c, _) = established();
    assert_eq!(c.on_host_event(EventSet::ERROR), Err(Close { rst: true }));
}

#[test]
fn handshake_deadlines() {
    let t = now();
    let mut c = Connection::host(MockStream::default(), t);
    assert_eq!(c.on_deadline(t), None);
    assert_eq!(
        c.on_deadline(t + CONNECT_TIMEOUT),
        Some(Close { rst: false })
    );

    let host = MockStream::default();
    let mut c = Connection::host(host.clone(), t);
    host.feed(b"CONNECT 9\n");
    c.on_host_event(EventSet::IN).unwrap();
    c.start_local_init(LOCAL, 9);
    assert_eq!(c.deadline(), None, "no timeout before the request goes out");
    let mut buf = [0u8; 8];
    let mut hdr = Header::default();
    c.fill_rx(&mut hdr, &slice(&mut buf), t).unwrap();
    assert_eq!(
        c.on_deadline(t + RESPONSE_TIMEOUT),
        Some(Close { rst: true })
    );
}

#[test]
fn a_zero_length_rx_buffer_carries_control_but_no_data() {
    let (mut c, host) = established();
    host.feed(b"data");
    c.on_host_event(EventSet::IN).unwrap();
    assert!(rx_with(&mut c, 0).is_none());
    assert!(c.has_rx_work(), "the data is still owed");
    assert_eq!(rx(&mut c).unwrap().1, b"data");
}
