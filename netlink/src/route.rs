//! Routes of the main table: listing them and adding them.

use std::net::IpAddr;

use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use crate::socket::{NetlinkError, RtnlSocket};
use crate::types::{IpNet, Route};

/// A route of the main table as the kernel lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct TableRoute {
    /// Whether it is an IPv6 route.
    pub(crate) ipv6: bool,
    /// Destination and prefix length (`prefix_len` 0 for a default route).
    pub(crate) destination: IpNet,
    /// Next hop.
    pub(crate) gateway: Option<IpAddr>,
    /// Preferred source.
    pub(crate) source: Option<IpAddr>,
    /// Output link's ifindex; `None` for multipath routes.
    pub(crate) link_index: Option<u32>,
    /// `RT_SCOPE_*`.
    pub(crate) scope: u8,
    /// Priority; 0 when unset.
    pub(crate) metric: u32,
    /// `RTN_UNICAST`, `RTN_MULTICAST`…
    pub(crate) kind: RouteType,
    /// Whether it has several next hops.
    pub(crate) multipath: bool,
}

/// Every IPv4 and IPv6 route of the main table, in the kernel's order.
pub(crate) fn list_main_routes(socket: &mut RtnlSocket) -> Result<Vec<TableRoute>, NetlinkError> {
    let replies = socket.dump(RouteNetlinkMessage::GetRoute(RouteMessage::default()))?;
    Ok(replies
        .into_iter()
        .filter_map(|reply| match reply {
            RouteNetlinkMessage::NewRoute(message) => route_from_message(message),
            _ => None,
        })
        .collect())
}

fn route_from_message(message: RouteMessage) -> Option<TableRoute> {
    let header = message.header;
    let ipv6 = match header.address_family {
        AddressFamily::Inet => false,
        AddressFamily::Inet6 => true,
        _ => return None,
    };
    let mut table = u32::from(header.table);
    let mut route = TableRoute {
        ipv6,
        destination: IpNet {
            addr: unspecified(ipv6),
            prefix_len: header.destination_prefix_length,
        },
        gateway: None,
        source: None,
        link_index: None,
        scope: header.scope.into(),
        metric: 0,
        kind: header.kind,
        multipath: false,
    };
    for attribute in message.attributes {
        match attribute {
            RouteAttribute::Table(id) => table = id,
            RouteAttribute::Destination(address) => {
                route.destination.addr = ip_of(address)?;
            }
            RouteAttribute::Gateway(address) => route.gateway = ip_of(address),
            RouteAttribute::PrefSource(address) => route.source = ip_of(address),
            RouteAttribute::Oif(index) => route.link_index = Some(index),
            RouteAttribute::Priority(metric) => route.metric = metric,
            RouteAttribute::MultiPath(_) => route.multipath = true,
            _ => {}
        }
    }
    (table == u32::from(RouteHeader::RT_TABLE_MAIN)).then_some(route)
}

fn ip_of(address: RouteAddress) -> Option<IpAddr> {
    match address {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(v6)),
        _ => None,
    }
}

fn unspecified(ipv6: bool) -> IpAddr {
    if ipv6 {
        IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED)
    } else {
        IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)
    }
}

/// Whether `route` is IPv6: by its destination, else its gateway, else its
/// source; IPv4 when it has none of them.
pub(crate) fn route_is_ipv6(route: &Route) -> bool {
    route
        .destination
        .map(|destination| destination.addr)
        .or(route.gateway)
        .or(route.source)
        .is_some_and(|address| address.is_ipv6())
}

/// Adds `route` to the main table, out of link `link_index`.
pub(crate) fn add_route(
    socket: &mut RtnlSocket,
    route: &Route,
    link_index: u32,
) -> Result<(), NetlinkError> {
    let mut message = RouteMessage::default();
    message.header.address_family = if route_is_ipv6(route) {
        AddressFamily::Inet6
    } else {
        AddressFamily::Inet
    };
    message.header.table = RouteHeader::RT_TABLE_MAIN;
    message.header.protocol = RouteProtocol::Boot;
    message.header.scope = RouteScope::from(route.scope);
    message.header.kind = RouteType::Unicast;
    if let Some(destination) = route.destination {
        message.header.destination_prefix_length = destination.prefix_len;
        message
            .attributes
            .push(RouteAttribute::Destination(destination.addr.into()));
    }
    if let Some(gateway) = route.gateway {
        message
            .attributes
            .push(RouteAttribute::Gateway(gateway.into()));
    }
    if let Some(source) = route.source {
        message
            .attributes
            .push(RouteAttribute::PrefSource(source.into()));
    }
    message.attributes.push(RouteAttribute::Oif(link_index));
    if route.metric != 0 {
        message
            .attributes
            .push(RouteAttribute::Priority(route.metric));
    }
    socket.request(
        RouteNetlinkMessage::NewRoute(message),
        NLM_F_CREATE | NLM_F_EXCL,
    )
}
