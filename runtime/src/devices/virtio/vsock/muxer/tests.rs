//! The connection table on in-memory streams and a scripted backend.

use super::*;
use crate::devices::virtio::vsock::connection::{CLOSE_TIMEOUT, CONNECT_TIMEOUT, TX_BUF_SIZE};
use crate::devices::virtio::vsock::packet::shutdown;
use crate::devices::virtio::vsock::testing::{
    guest_hdr, rw_hdr, slice, MockBackend, MockStream, GUEST_CID,
};

fn muxer() -> Muxer<MockBackend> {
    Muxer::new(GUEST_CID, MockBackend::default())
}

fn rx(m: &mut Muxer<MockBackend>) -> Option<(Header, Vec<u8>)> {
    let mut buf = vec![0u8; 4096];
    let mut hdr = Header::default();
    let len = m.next_rx_packet(&mut hdr, &slice(&mut buf))?;
    buf.truncate(len as usize);
    Some((hdr, buf))
}

fn rx_all(m: &mut Muxer<MockBackend>) -> Vec<Header> {
    std::iter::from_fn(|| rx(m).map(|(h, _)| h)).collect()
}

fn send(m: &mut Muxer<MockBackend>, hdr: Header) -> GuestOutcome {
    m.guest_packet::<()>(&hdr, None)
}

fn send_data(m: &mut Muxer<MockBackend>, src: u32, dst: u32, data: &[u8]) -> GuestOutcome {
    let mut copy = data.to_vec();
    m.guest_packet(&rw_hdr(src, dst, data.len()), Some(&slice(&mut copy)))
}

/// A host connection to guest port `port`, accepted by the guest.
fn host_connection(m: &mut Muxer<MockBackend>, port: u32) -> (ConnId, MockStream, u32) {
    let host = MockStream::default();
    let id = m.add_host_stream(host.clone()).unwrap();
    host.feed(format!("CONNECT {port}\n").as_bytes());
    m.host_event(id, EventSet::IN);
    let (req, _) = rx(m).unwrap();
    assert_eq!(req.op, op::REQUEST);
    assert_eq!(
        (req.src_cid, req.dst_cid, req.dst_port),
        (HOST_CID, GUEST_CID, port)
    );
    send(m, guest_hdr(op::RESPONSE, port, req.src_port));
    let ok = host.take_output();
    assert_eq!(ok, format!("OK {}\n", req.src_port).as_bytes());
    (id, host, req.src_port)
}

#[test]
fn host_connections_get_fresh_ports_and_the_guest_can_refuse() {
    let mut m = muxer();
    let (id, host, local) = host_connection(&mut m, 1024);
    assert_eq!(local, FIRST_LOCAL_PORT);
    assert_eq!(m.find(local, 1024), Some(id));
    // Data both ways through the table.
    assert_eq!(
        send_data(&mut m, 1024, local, b"to host"),
        GuestOutcome::Consumed
    );
    assert_eq!(host.take_output(), b"to host");
    host.feed(b"to guest");
    m.host_event(id, EventSet::IN);
    let (pkt, data) = rx(&mut m).unwrap();
    assert_eq!(data, b"to guest");
    assert_eq!(
        (pkt.src_cid, pkt.dst_cid, pkt.src_port, pkt.dst_port),
        (HOST_CID, GUEST_CID, local, 1024)
    );

    // A second connection, same guest port: the next host port.
    let (_, _, local2) = host_connection(&mut m, 1024);
    assert_eq!(local2, FIRST_LOCAL_PORT + 1);

    // Nobody listens on the guest port: the host stream is closed.
    let host = MockStream::default();
    let id = m.add_host_stream(host.clone()).unwrap();
    host.feed(b"CONNECT 99\n");
    m.host_event(id, EventSet::IN);
    let (req, _) = rx(&mut m).unwrap();
    let _ = m.take_closed().count();
    send(&mut m, guest_hdr(op::RST, 99, req.src_port));
    assert!(m.conn(id).is_none());
    assert_eq!(m.take_closed().count(), 1);
    assert!(host.take_output().is_empty(), "no OK line");
    assert!(rx(&mut m).is_none(), "no RST for an RST");
    assert_eq!(m.len(), 2);
}

#[test]
fn local_ports_wrap_and_skip_ports_in_use() {
    let mut m = muxer();
    m.next_local_port = u32::MAX;
    let (_, _, a) = host_connection(&mut m, 7);
    let (_, _, b) = host_connection(&mut m, 7);
    assert_eq!((a, b), (u32::MAX, FIRST_LOCAL_PORT));
    m.next_local_port = u32::MAX;
    let (_, _, c) = host_connection(&mut m, 7);
    assert_eq!(
        c,
        FIRST_LOCAL_PORT + 1,
        "both earlier ports are taken for guest port 7"
    );
}

#[test]
fn guest_connections_reach_the_backend_or_are_refused() {
    let mut m = muxer();
    let host = m.backend.listen(5000);
    send(&mut m, guest_hdr(op::REQUEST, 777, 5000));
    let (resp, _) = rx(&mut m).unwrap();
    assert_eq!(
        (resp.op, resp.src_port, resp.dst_port, resp.dst_cid),
        (op::RESPONSE, 5000, 777, GUEST_CID)
    );
    send_data(&mut m, 777, 5000, b"hi");
    assert_eq!(host.take_output(), b"hi");

    // Nothing serves port 6000.
    send(&mut m, guest_hdr(op::REQUEST, 778, 6000));
    let (rst, _) = rx(&mut m).unwrap();
    assert_eq!(
        (rst.op, rst.src_port, rst.dst_port, rst.src_cid, rst.dst_cid),
        (op::RST, 6000, 778, HOST_CID, GUEST_CID)
    );
    assert_eq!(m.backend.attempts, vec![5000, 6000]);

    // A second REQUEST on a live connection is a protocol error.
    send(&mut m, guest_hdr(op::REQUEST, 777, 5000));
    assert_eq!(rx(&mut m).unwrap().0.op, op::RST);
    assert_eq!(m.find(5000, 777), None);
}

#[test]
fn strays_wrong_cids_and_wrong_types() {
    let mut m = muxer();
    // Packets for connections that do not exist are reset ...
    for op_ in [
        op::RW,
        op::RESPONSE,
        op::SHUTDOWN,
        op::CREDIT_UPDATE,
        op::CREDIT_REQUEST,
        42,
    ] {
        send(&mut m, guest_hdr(op_, 10, 20));
        let (rst, _) = rx(&mut m).unwrap();
        assert_eq!(
            (rst.op, rst.src_port, rst.dst_port),
            (op::RST, 20, 10),
            "op {op_}"
        );
    }
    // ... except RSTs.
    send(&mut m, guest_hdr(op::RST, 10, 20));
    assert!(rx(&mut m).is_none());

    // Wrong cids are dropped: there is nobody to answer.
    for (src, dst) in [
        (GUEST_CID + 1, HOST_CID),
        (GUEST_CID, 1),
        (GUEST_CID, GUEST_CID),
        (u64::MAX, 0),
    ] {
        let hdr = Header {
            src_cid: src,
            dst_cid: dst,
            ..guest_hdr(op::REQUEST, 1, 5000)
        };
        send(&mut m, hdr);
    }
    assert!(rx(&mut m).is_none());
    assert!(m.backend.attempts.is_empty());

    // Other socket types are refused in their own type.
    let hdr = Header {
        type_: 2,
        ..guest_hdr(op::REQUEST, 1, 5000)
    };
    send(&mut m, hdr);
    let (rst, _) = rx(&mut m).unwrap();
    assert_eq!((rst.op, rst.type_), (op::RST, 2));
    assert!(m.backend.attempts.is_empty());
}

#[test]
fn stray_resets_are_bounded() {
    let mut m = muxer();
    for i in 0..(MAX_CONTROL_PACKETS as u32 + 500) {
        send(&mut m, guest_hdr(op::RW, i, 1));
    }
    assert_eq!(rx_all(&mut m).len(), MAX_CONTROL_PACKETS);
}

#[test]
fn connections_are_bounded() {
    let mut m = muxer();
    for port in 0..MAX_CONNECTIONS as u32 {
        m.backend.listen(port);
        send(&mut m, guest_hdr(op::REQUEST, port, port));
    }
    assert_eq!(m.len(), MAX_CONNECTIONS);
    m.backend.listen(9999);
    send(&mut m, guest_hdr(op::REQUEST, 1, 9999));
    assert!(m.add_host_stream(MockStream::default()).is_none());
    assert_eq!(m.len(), MAX_CONNECTIONS);
    let packets = rx_all(&mut m);
    // The refusal was queued first (control packets go first), then one
    // RESPONSE per accepted connection.
    assert_eq!(packets[0].op, op::RST);
    assert_eq!(packets[0].src_port, 9999);
    assert_eq!(
        packets[1..].iter().filter(|h| h.op == op::RESPONSE).count(),
        MAX_CONNECTIONS
    );
    assert_eq!(
        m.backend.attempts.len(),
        MAX_CONNECTIONS,
        "no connect attempt when full"
    );
}

#[test]
fn closing_connections_leave_the_table_and_epoll() {
    let mut m = muxer();
    let (id, host, local) = host_connection(&mut m, 1024);
    // The device registers what the connection wants.
    while let Some(dirty) = m.pop_dirty() {
        let want = m.conn(dirty).unwrap().wanted_epoll();
        m.set_registered(dirty, want);
    }
    assert_eq!(m.conn(id).unwrap().epoll, Some(EventSet::IN));
    // A host stream error resets the guest side.
    host.state().write_error = Some(std::io::ErrorKind::BrokenPipe);
    send_data(&mut m, 1024, local, b"x");
    assert!(m.conn(id).is_none());
    assert_eq!(m.find(local, 1024), None);
    let closed: Vec<_> = m.take_closed().collect();
    assert_eq!(closed.len(), 1);
    assert!(closed[0].registered);
    let (rst, _) = rx(&mut m).unwrap();
    assert_eq!((rst.op, rst.src_port, rst.dst_port), (op::RST, local, 1024));
    // Later packets for it are strays.
    send_data(&mut m, 1024, local, b"y");
    assert_eq!(rx(&mut m).unwrap().0.op, op::RST);

    // The guest shuts both ways: RST back, connection gone.
    let (id, host, local) = host_connection(&mut m, 1024);
    let hdr = Header {
        flags: shutdown::BOTH,
        ..guest_hdr(op::SHUTDOWN, 1024, local)
    };
    send(&mut m, hdr);
    assert!(m.conn(id).is_none());
    assert!(host.state().write_shut);
    assert_eq!(rx(&mut m).unwrap().0.op, op::RST);
}

#[test]
fn epoll_interest_follows_the_connection() {
    let mut m = muxer();
    let host = MockStream::default();
    let id = m.add_host_stream(host.clone()).unwrap();
    assert_eq!(m.pop_dirty(), Some(id));
    assert_eq!(m.conn(id).unwrap().wanted_epoll(), Some(EventSet::IN));
    m.set_registered(id, Some(EventSet::IN));
    assert_eq!(m.pop_dirty(), None);
    host.feed(b"CONNECT 5\n");
    m.host_event(id, EventSet::IN);
    assert_eq!(m.pop_dirty(), Some(id));
    assert_eq!(m.conn(id).unwrap().wanted_epoll(), Some(EventSet::empty()));
    m.set_registered(id, Some(EventSet::empty()));
    // A hang-up while waiting for the guest: closed, nothing to tell the
    // guest if the request never went out.
    m.host_event(id, EventSet::HANG_UP);
    assert!(m.conn(id).is_none());
    assert!(m.take_closed().next().unwrap().registered);
    assert!(rx(&mut m).is_none());
    // Stale events for it are ignored.
    m.host_event(id, EventSet::IN);
}

#[test]
fn deadlines_end_stuck_connections() {
    let mut m = muxer();
    let t0 = Instant::now();
    m.set_now(t0);
    let quiet = m.add_host_stream(MockStream::default()).unwrap();
    assert!(m.needs_timer());
    let (id, host, local) = host_connection(&mut m, 1024);
    host.state().room = 0;
    send_data(&mut m, 1024, local, b"unread");
    let t1 = t0 + CONNECT_TIMEOUT / 2;
    m.set_now(t1);
    send(
        &mut m,
        Header {
            flags: shutdown::BOTH,
            ..guest_hdr(op::SHUTDOWN, 1024, local)
        },
    );
    m.set_now(t0 + CONNECT_TIMEOUT);
    m.tick();
    assert!(m.conn(quiet).is_none(), "no CONNECT line in time");
    assert!(m.conn(id).is_some());
    assert!(rx(&mut m).is_none(), "the guest never knew the quiet one");
    m.set_now(t1 + CLOSE_TIMEOUT);
    m.tick();
    assert!(m.conn(id).is_none(), "the host never read");
    assert_eq!(rx(&mut m).unwrap().0.op, op::RST);
    m.tick();
    assert!(!m.needs_timer());
}

#[test]
fn an_overrunning_guest_stalls_the_tx_queue_until_the_host_reads() {
    let mut m = muxer();
    let (id, host, local) = host_connection(&mut m, 1024);
    host.state().room = 0;
    let chunk = vec![0u8; 64 * 1024];
    let fits = TX_BUF_SIZE as usize / chunk.len();
    for _ in 0..fits {
        assert_eq!(
            send_data(&mut m, 1024, local, &chunk),
            GuestOutcome::Consumed
        );
    }
    assert_eq!(send_data(&mut m, 1024, local, &chunk), GuestOutcome::Stall);
    assert!(m.is_tx_stalled());
    assert!(!m.take_tx_resume());
    host.state().room = 100;
    m.host_event(id, EventSet::OUT);
    assert!(!m.is_tx_stalled());
    assert!(m.take_tx_resume());
    assert!(!m.take_tx_resume(), "once");

    // A connection that dies while stalled un-stalls the queue too.
    host.state().room = 0;
    for _ in 0..2 {
        send_data(&mut m, 1024, local, &chunk);
    }
    assert!(m.is_tx_stalled());
    send(&mut m, guest_hdr(op::RST, 1024, local));
    assert!(!m.is_tx_stalled());
    assert!(m.take_tx_resume());
}

#[test]
fn bad_chains_reset_their_connection() {
    let mut m = muxer();
    let (id, _, local) = host_connection(&mut m, 1024);
    m.bad_guest_packet(&rw_hdr(1024, local, 100));
    assert!(m.conn(id).is_none());
    assert_eq!(rx(&mut m).unwrap().0.op, op::RST);
    m.bad_guest_packet(&rw_hdr(1, 2, 100));
    assert_eq!(rx(&mut m).unwrap().0.op, op::RST);
    m.bad_guest_packet(&Header {
        src_cid: 99,
        ..rw_hdr(1, 2, 100)
    });
    assert!(rx(&mut m).is_none());
}

#[test]
fn reset_forgets_everything() {
    let mut m = muxer();
    let (_, _, local) = host_connection(&mut m, 1024);
    m.add_host_stream(MockStream::default()).unwrap();
    send(&mut m, guest_hdr(op::RW, 1, 2));
    let _ = m.take_closed().count();
    m.reset();
    assert_eq!(m.len(), 0);
    assert_eq!(m.take_closed().count(), 2);
    assert!(!m.has_rx_work());
    assert_eq!(m.pop_dirty(), None);
    send_data(&mut m, 1024, local, b"x");
    assert_eq!(rx(&mut m).unwrap().0.op, op::RST);
}

#[test]
fn the_rx_schedule_is_round_robin() {
    let mut m = muxer();
    let (a, ha, _) = host_connection(&mut m, 1);
    let (b, hb, _) = host_connection(&mut m, 2);
    ha.feed(&[1u8; 10_000]);
    hb.feed(&[2u8; 10_000]);
    m.host_event(a, EventSet::IN);
    m.host_event(b, EventSet::IN);
    let order: Vec<u32> = (0..4).map(|_| rx(&mut m).unwrap().0.dst_port).collect();
    assert_eq!(order, vec![1, 2, 1, 2]);
}
