//! Links (network interfaces): listing them and changing the few things
//! husk changes (up/down, MTU, name).

use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkInfo, LinkLayerType, LinkMessage};
use netlink_packet_route::RouteNetlinkMessage;

use crate::socket::{NetlinkError, RtnlSocket};
use crate::types::Mac;

/// What husk needs to know of one link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Link {
    /// Its ifindex.
    pub(crate) index: u32,
    /// Its name.
    pub(crate) name: String,
    /// Its hardware address when it is an Ethernet address.
    pub(crate) mac: Option<Mac>,
    /// Its MTU.
    pub(crate) mtu: u32,
    /// Its driver kind (`veth`, `tun`…) or, without one, its link-layer
    /// type (`ETHER`, `NONE`…).
    pub(crate) kind: String,
    /// Whether its link-layer type is Ethernet.
    pub(crate) is_ethernet: bool,
    /// Whether it is administratively up.
    pub(crate) up: bool,
    /// Whether it is a loopback device.
    pub(crate) loopback: bool,
}

/// Every link of the socket's namespace, in ifindex order.
pub(crate) fn list_links(socket: &mut RtnlSocket) -> Result<Vec<Link>, NetlinkError> {
    let replies = socket.dump(RouteNetlinkMessage::GetLink(LinkMessage::default()))?;
    let mut links: Vec<Link> = replies
        .into_iter()
        .filter_map(|reply| match reply {
            RouteNetlinkMessage::NewLink(message) => Some(link_from_message(message)),
            _ => None,
        })
        .collect();
    links.sort_by_key(|link| link.index);
    Ok(links)
}

/// The link named `name`, if there is one.
pub(crate) fn find_link<'a>(links: &'a [Link], name: &str) -> Option<&'a Link> {
    links.iter().find(|link| link.name == name)
}

fn link_from_message(message: LinkMessage) -> Link {
    let header = message.header;
    let mut link = Link {
        index: header.index,
        name: String::new(),
        mac: None,
        mtu: 0,
        kind: header.link_layer_type.to_string(),
        is_ethernet: header.link_layer_type == LinkLayerType::Ether,
        up: header.flags.contains(LinkFlags::Up),
        loopback: header.flags.contains(LinkFlags::Loopback)
            || header.link_layer_type == LinkLayerType::Loopback,
    };
    for attribute in message.attributes {
        match attribute {
            LinkAttribute::IfName(name) => link.name = name,
            LinkAttribute::Mtu(mtu) => link.mtu = mtu,
            LinkAttribute::Address(bytes) => {
                link.mac = <[u8; 6]>::try_from(bytes.as_slice()).ok().map(Mac);
            }
            LinkAttribute::LinkInfo(infos) => {
                for info in infos {
                    if let LinkInfo::Kind(kind) = info {
                        link.kind = kind.to_string();
                    }
                }
            }
            _ => {}
        }
    }
    if !link.is_ethernet {
        link.mac = None;
    }
    link
}

/// Sets link `index` administratively up or down.
pub(crate) fn set_link_up(
    socket: &mut RtnlSocket,
    index: u32,
    up: bool,
) -> Result<(), NetlinkError> {
    let mut message = LinkMessage::default();
    message.header.index = index;
    message.header.change_mask = LinkFlags::Up;
    if up {
        message.header.flags = LinkFlags::Up;
    }
    socket.request(RouteNetlinkMessage::SetLink(message), 0)
}

/// Sets the MTU of link `index`.
pub(crate) fn set_link_mtu(
    socket: &mut RtnlSocket,
    index: u32,
    mtu: u32,
) -> Result<(), NetlinkError> {
    let mut message = LinkMessage::default();
    message.header.index = index;
    message.attributes.push(LinkAttribute::Mtu(mtu));
    socket.request(RouteNetlinkMessage::SetLink(message), 0)
}

/// Renames link `index` (the kernel wants it down for that).
pub(crate) fn rename_link(
    socket: &mut RtnlSocket,
    index: u32,
    name: &str,
) -> Result<(), NetlinkError> {
    let mut message = LinkMessage::default();
    message.header.index = index;
    message
        .attributes
        .push(LinkAttribute::IfName(name.to_owned()));
    socket.request(RouteNetlinkMessage::SetLink(message), 0)
}
