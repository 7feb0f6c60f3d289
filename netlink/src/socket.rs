//! The request layer: one NETLINK_ROUTE socket, requests answered by an
//! ACK (the kernel's errno mapped into [`NetlinkError`]) and dumps.
//!
//! Synchronous and single-threaded on purpose: every caller owns its socket,
//! opened in the network namespace it works on (see [`crate::netns`]).

use std::io;

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NlasIterator, NLM_F_ACK, NLM_F_ACK_TLVS,
    NLM_F_CAPPED, NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_REQUEST,
};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};
use nix::errno::Errno;

/// `NLMSGERR_ATTR_MSG`: the kernel's extended-ACK text.
const NLMSGERR_ATTR_MSG: u16 = 1;
/// Length of a `struct nlmsghdr`.
const NLMSG_HEADER_LEN: usize = 16;
/// How many times a dump the kernel marked as interrupted (the tables
/// changed while it was being read) is started again.
const DUMP_ATTEMPTS: usize = 5;
/// First receive buffer; grown when the kernel has a bigger datagram.
const RECEIVE_BUFFER_LEN: usize = 64 * 1024;

/// A netlink request that failed.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    /// The socket could not be opened, bound or connected.
    #[error("opening a NETLINK_ROUTE socket")]
    Open(#[source] io::Error),
    /// The request could not be sent.
    #[error("sending a netlink request")]
    Send(#[source] io::Error),
    /// The answer could not be received.
    #[error("receiving a netlink answer")]
    Receive(#[source] io::Error),
    /// The answer could not be decoded.
    #[error("decoding a netlink answer")]
    Decode(#[source] netlink_packet_core::DecodeError),
    /// The kernel refused the request.
    #[error("the kernel answered {errno}{}", detail.as_ref().map(|d| format!(" ({d})")).unwrap_or_default())]
    Kernel {
        /// The errno the kernel answered with.
        errno: Errno,
        /// The kernel's extended-ACK message, when it gave one.
        detail: Option<String>,
    },
    /// The kernel reported a buffer overrun: messages were lost.
    #[error("the netlink socket overran")]
    Overrun,
    /// A dump was interrupted by concurrent changes every time it was tried.
    #[error("the dump was interrupted by concurrent changes {DUMP_ATTEMPTS} times")]
    DumpInterrupted,
}

impl NetlinkError {
    /// The kernel's errno, if the kernel refused the request.
    pub fn errno(&self) -> Option<Errno> {
        match self {
            Self::Kernel { errno, .. } => Some(*errno),
            _ => None,
        }
    }
}

/// A NETLINK_ROUTE socket bound in the calling thread's network namespace.
pub(crate) struct RtnlSocket {
    socket: Socket,
    sequence: u32,
    buffer: Vec<u8>,
}

impl RtnlSocket {
    /// Opens a socket in the current thread's network namespace.
    pub(crate) fn open() -> Result<Self, NetlinkError> {
        let mut socket = Socket::new(NETLINK_ROUTE).map_err(NetlinkError::Open)?;
        socket.bind_auto().map_err(NetlinkError::Open)?;
        socket
            .connect(&SocketAddr::new(0, 0))
            .map_err(NetlinkError::Open)?;
        // Both are optional comforts (kernel text in errors, short ACKs).
        if let Err(error) = socket.set_ext_ack(true) {
            log::debug!("netlink extended ACKs unavailable: {error}");
        }
        if let Err(error) = socket.set_cap_ack(true) {
            log::debug!("netlink capped ACKs unavailable: {error}");
        }
        Ok(Self {
            socket,
            sequence: 0,
            buffer: Vec::with_capacity(RECEIVE_BUFFER_LEN),
        })
    }

    /// Sends `message` with `NLM_F_REQUEST | NLM_F_ACK | flags` and waits
    /// for the kernel's ACK.
    pub(crate) fn request(
        &mut self,
        message: RouteNetlinkMessage,
        flags: u16,
    ) -> Result<(), NetlinkError> {
        let sequence = self.send(message, NLM_F_REQUEST | NLM_F_ACK | flags)?;
        loop {
            for reply in self.receive()? {
                if reply.header.sequence_number != sequence {
                    continue;
                }
                match reply.payload {
                    NetlinkPayload::Error(error) => match error.code {
                        None => return Ok(()),
                        Some(code) => {
                            return Err(kernel_error(code.get(), reply.header.flags, &error.header))
                        }
                    },
                    NetlinkPayload::Overrun(_) => return Err(NetlinkError::Overrun),
                    _ => {}
                }
            }
        }
    }

    /// Sends `message` as a dump request and collects every answer until
    /// the kernel says it is done. A dump interrupted by concurrent changes
    /// is started again.
    pub(crate) fn dump(
        &mut self,
        message: RouteNetlinkMessage,
    ) -> Result<Vec<RouteNetlinkMessage>, NetlinkError> {
        for _ in 0..DUMP_ATTEMPTS {
            let (messages, interrupted) = self.dump_once(message.clone())?;
            if !interrupted {
                return Ok(messages);
            }
            log::debug!("netlink dump interrupted, starting it again");
        }
        Err(NetlinkError::DumpInterrupted)
    }

    fn dump_once(
        &mut self,
        message: RouteNetlinkMessage,
    ) -> Result<(Vec<RouteNetlinkMessage>, bool), NetlinkError> {
        let sequence = self.send(message, NLM_F_REQUEST | NLM_F_DUMP)?;
        let mut messages = Vec::new();
        let mut interrupted = false;
        loop {
            for reply in self.receive()? {
                if reply.header.sequence_number != sequence {
                    continue;
                }
                interrupted |= reply.header.flags & NLM_F_DUMP_INTR != 0;
                match reply.payload {
                    NetlinkPayload::InnerMessage(inner) => messages.push(inner),
                    NetlinkPayload::Done(done) if done.code < 0 => {
                        return Err(kernel_error(done.code, 0, &[]));
                    }
                    NetlinkPayload::Done(_) => return Ok((messages, interrupted)),
                    NetlinkPayload::Error(error) => match error.code {
                        None => return Ok((messages, interrupted)),
                        Some(code) => {
                            return Err(kernel_error(code.get(), reply.header.flags, &error.header))
                        }
                    },
                    NetlinkPayload::Overrun(_) => return Err(NetlinkError::Overrun),
                    _ => {}
                }
            }
        }
    }

    fn send(&mut self, message: RouteNetlinkMessage, flags: u16) -> Result<u32, NetlinkError> {
        self.sequence = self.sequence.wrapping_add(1);
        let mut packet =
            NetlinkMessage::new(NetlinkHeader::default(), NetlinkPayload::from(message));
        packet.header.flags = flags;
        packet.header.sequence_number = self.sequence;
        packet.finalize();
        let mut bytes = vec![0; packet.buffer_len()];
        packet.serialize(&mut bytes);
        self.socket.send(&bytes, 0).map_err(NetlinkError::Send)?;
        Ok(self.sequence)
    }

    /// Receives one datagram (which may hold several messages) whole.
    fn receive(&mut self) -> Result<Vec<NetlinkMessage<RouteNetlinkMessage>>, NetlinkError> {
        self.buffer.clear();
        let needed = loop {
            match self
                .socket
                .recv(&mut self.buffer, libc::MSG_PEEK | libc::MSG_TRUNC)
            {
                Ok(len) => break len,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => return Err(NetlinkError::Receive(error)),
            }
        };
        self.buffer.clear();
        self.buffer.reserve(needed);
        loop {
            match self.socket.recv(&mut self.buffer, 0) {
                Ok(_) => break,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => return Err(NetlinkError::Receive(error)),
            }
        }
        let mut messages = Vec::new();
        let mut offset = 0;
        while offset + NLMSG_HEADER_LEN <= self.buffer.len() {
            let message =
                NetlinkMessage::<RouteNetlinkMessage>::deserialize(&self.buffer[offset..])
                    .map_err(NetlinkError::Decode)?;
            let length = message.header.length as usize;
            messages.push(message);
            if length == 0 {
                break;
            }
            offset += align4(length);
        }
        Ok(messages)
    }
}

/// The error the kernel answered with, and its extended-ACK text if the
/// `NLMSG_ERROR` message carries one after the echoed request.
fn kernel_error(code: i32, flags: u16, payload: &[u8]) -> NetlinkError {
    let errno = Errno::from_raw(code.saturating_abs());
    let detail = if flags & NLM_F_ACK_TLVS != 0 {
        extended_ack_message(flags, payload)
    } else {
        None
    };
    NetlinkError::Kernel { errno, detail }
}

fn extended_ack_message(flags: u16, payload: &[u8]) -> Option<String> {
    let echoed_len = if flags & NLM_F_CAPPED != 0 {
        NLMSG_HEADER_LEN
    } else {
        let length = payload.get(..4)?;
        align4(u32::from_ne_bytes(length.try_into().ok()?) as usize)
    };
    let attributes = payload.get(echoed_len..)?;
    NlasIterator::new(attributes)
        .filter_map(Result::ok)
        .find(|attribute| attribute.kind() == NLMSGERR_ATTR_MSG)
        .and_then(|attribute| netlink_packet_core::parse_string(attribute.value()).ok())
        .filter(|text| !text.is_empty())
}

fn align4(length: usize) -> usize {
    (length + 3) & !3
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_route::link::{LinkAttribute, LinkMessage};

    #[test]
    fn dumps_links_and_maps_errno() {
        let mut socket = RtnlSocket::open().unwrap();
        let links = socket
            .dump(RouteNetlinkMessage::GetLink(LinkMessage::default()))
            .unwrap();
        assert!(!links.is_empty(), "no links at all");

        // Setting a link that does not exist: the kernel says ENODEV.
        let mut message = LinkMessage::default();
        message.header.index = 0x7fff_fff0;
        message.attributes.push(LinkAttribute::Mtu(1500));
        let error = socket
            .request(RouteNetlinkMessage::SetLink(message), 0)
            .unwrap_err();
        assert_eq!(error.errno(), Some(Errno::ENODEV), "{error}");
    }
}
