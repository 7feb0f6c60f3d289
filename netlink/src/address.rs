//! Interface addresses: listing them and adding them.

use std::net::{IpAddr, Ipv4Addr};

use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::address::{AddressAttribute, AddressFlags, AddressMessage};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use crate::socket::{NetlinkError, RtnlSocket};
use crate::types::IpNet;

/// One address and the link it is on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct LinkAddress {
    /// The link's ifindex.
    pub(crate) link_index: u32,
    /// The address and prefix length.
    pub(crate) address: IpNet,
}

/// Every address of the socket's namespace (IPv4 first), in the kernel's
/// order.
pub(crate) fn list_addresses(socket: &mut RtnlSocket) -> Result<Vec<LinkAddress>, NetlinkError> {
    let replies = socket.dump(RouteNetlinkMessage::GetAddress(AddressMessage::default()))?;
    Ok(replies
        .into_iter()
        .filter_map(|reply| match reply {
            RouteNetlinkMessage::NewAddress(message) => address_from_message(message),
            _ => None,
        })
        .collect())
}

fn address_from_message(message: AddressMessage) -> Option<LinkAddress> {
    let mut address = None;
    let mut local = None;
    for attribute in message.attributes {
        match attribute {
            AddressAttribute::Address(ip) => address = Some(ip),
            AddressAttribute::Local(ip) => local = Some(ip),
            _ => {}
        }
    }
    // IFA_LOCAL is the interface's own address; IFA_ADDRESS is the peer's
    // on point-to-point links and the same otherwise (IPv6 has only it).
    let addr = local.or(address)?;
    Some(LinkAddress {
        link_index: message.header.index,
        address: IpNet {
            addr,
            prefix_len: message.header.prefix_len,
        },
    })
}

/// Whether `address` is an IPv6 link-local address (`fe80::/10`).
pub(crate) fn is_ipv6_link_local(address: IpAddr) -> bool {
    matches!(address, IpAddr::V6(v6) if v6.segments()[0] & 0xffc0 == 0xfe80)
}

/// Adds `address` to link `index`. IPv4 addresses get the subnet's
/// broadcast address; IPv6 ones skip duplicate address detection (the
/// address was already in use, checked, in the pod's namespace).
pub(crate) fn add_address(
    socket: &mut RtnlSocket,
    index: u32,
    address: IpNet,
) -> Result<(), NetlinkError> {
    let mut message = AddressMessage::default();
    message.header.index = index;
    message.header.prefix_len = address.prefix_len;
    match address.addr {
        IpAddr::V4(v4) => {
            message.header.family = AddressFamily::Inet;
            message
                .attributes
                .push(AddressAttribute::Local(address.addr));
            message
                .attributes
                .push(AddressAttribute::Address(address.addr));
            if address.prefix_len < 31 {
                let host_mask = u32::MAX >> address.prefix_len;
                let broadcast = Ipv4Addr::from(u32::from(v4) | host_mask);
                message
                    .attributes
                    .push(AddressAttribute::Broadcast(broadcast));
            }
        }
        IpAddr::V6(_) => {
            message.header.family = AddressFamily::Inet6;
            message
                .attributes
                .push(AddressAttribute::Address(address.addr));
            message
                .attributes
                .push(AddressAttribute::Flags(AddressFlags::Nodad));
        }
    }
    socket.request(
        RouteNetlinkMessage::NewAddress(message),
        NLM_F_CREATE | NLM_F_EXCL,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_local_is_fe80_slash_10() {
        assert!(is_ipv6_link_local("fe80::1".parse().unwrap()));
        assert!(is_ipv6_link_local("febf::1".parse().unwrap()));
        assert!(!is_ipv6_link_local("fec0::1".parse().unwrap()));
        assert!(!is_ipv6_link_local("fd00::1".parse().unwrap()));
        assert!(!is_ipv6_link_local("10.0.0.1".parse().unwrap()));
    }
}
