//! Neighbour (ARP and NDP) entries: listing the permanent ones and adding
//! them.

use std::net::IpAddr;

use netlink_packet_core::{NLM_F_CREATE, NLM_F_REPLACE};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::RouteType;
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use crate::socket::{NetlinkError, RtnlSocket};
use crate::types::Mac;

/// A permanent neighbour entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PermanentNeighbour {
    /// The link's ifindex.
    pub(crate) link_index: u32,
    /// The neighbour's address.
    pub(crate) ip: IpAddr,
    /// Its MAC.
    pub(crate) mac: Mac,
}

/// Every permanent (`NUD_PERMANENT`) IPv4 and IPv6 neighbour entry with an
/// Ethernet address, in the kernel's order.
pub(crate) fn list_permanent_neighbours(
    socket: &mut RtnlSocket,
) -> Result<Vec<PermanentNeighbour>, NetlinkError> {
    let mut neighbours = Vec::new();
    // One dump per family: an AF_UNSPEC dump would bring the bridge
    // layer's forwarding entries along.
    for family in [AddressFamily::Inet, AddressFamily::Inet6] {
        let mut request = NeighbourMessage::default();
        request.header.family = family;
        let replies = socket.dump(RouteNetlinkMessage::GetNeighbour(request))?;
        neighbours.extend(replies.into_iter().filter_map(|reply| match reply {
            RouteNetlinkMessage::NewNeighbour(message) => permanent_from_message(message),
            _ => None,
        }));
    }
    Ok(neighbours)
}

fn permanent_from_message(message: NeighbourMessage) -> Option<PermanentNeighbour> {
    if message.header.state != NeighbourState::Permanent {
        return None;
    }
    let mut ip = None;
    let mut mac = None;
    for attribute in message.attributes {
        match attribute {
            NeighbourAttribute::Destination(NeighbourAddress::Inet(v4)) => ip = Some(v4.into()),
            NeighbourAttribute::Destination(NeighbourAddress::Inet6(v6)) => ip = Some(v6.into()),
            NeighbourAttribute::LinkLayerAddress(bytes) => {
                mac = <[u8; 6]>::try_from(bytes.as_slice()).ok().map(Mac);
            }
            _ => {}
        }
    }
    Some(PermanentNeighbour {
        link_index: message.header.ifindex,
        ip: ip?,
        mac: mac?,
    })
}

/// Adds (or replaces) a permanent neighbour entry on link `link_index`.
pub(crate) fn add_permanent_neighbour(
    socket: &mut RtnlSocket,
    link_index: u32,
    ip: IpAddr,
    mac: Mac,
) -> Result<(), NetlinkError> {
    let mut message = NeighbourMessage::default();
    message.header.family = if ip.is_ipv6() {
        AddressFamily::Inet6
    } else {
        AddressFamily::Inet
    };
    message.header.ifindex = link_index;
    message.header.state = NeighbourState::Permanent;
    message.header.kind = RouteType::Unspec;
    let destination = match ip {
        IpAddr::V4(v4) => NeighbourAddress::Inet(v4),
        IpAddr::V6(v6) => NeighbourAddress::Inet6(v6),
    };
    message
        .attributes
        .push(NeighbourAttribute::Destination(destination));
    message
        .attributes
        .push(NeighbourAttribute::LinkLayerAddress(mac.0.to_vec()));
    socket.request(
        RouteNetlinkMessage::NewNeighbour(message),
        NLM_F_CREATE | NLM_F_REPLACE,
    )
}
