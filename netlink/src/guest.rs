//! Applying a pod's network inside the guest, by its agent, in the agent's
//! own network namespace.

use std::collections::HashMap;

use nix::errno::Errno;

use crate::address::add_address;
use crate::link::{list_links, rename_link, set_link_mtu, set_link_up, Link};
use crate::neighbour::add_permanent_neighbour;
use crate::route::add_route;
use crate::socket::{NetlinkError, RtnlSocket};
use crate::types::{Interface, IpNet, Mac, Neighbour, PodNetwork, Route};

/// Applying a pod's network in the guest failed.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// Netlink could not be opened.
    #[error("opening netlink")]
    OpenNetlink(#[source] NetlinkError),
    /// The links could not be listed.
    #[error("listing links")]
    ListLinks(#[source] NetlinkError),
    /// Loopback could not be set up.
    #[error("setting {name} up")]
    Loopback {
        /// Loopback's name (`lo`).
        name: String,
        /// Why.
        #[source]
        source: NetlinkError,
    },
    /// No link has the MAC of one of the pod's interfaces.
    #[error("no link has MAC {mac}, which interface {interface} of the pod has")]
    NoLinkWithMac {
        /// The MAC looked for.
        mac: Mac,
        /// The pod's interface with that MAC.
        interface: String,
    },
    /// Configuring an interface's link failed.
    #[error("{step} (interface {interface}, link {link})")]
    Interface {
        /// What was being done (`renaming the link`…).
        step: &'static str,
        /// The pod's interface.
        interface: String,
        /// The link's name when the step began.
        link: String,
        /// Why.
        #[source]
        source: NetlinkError,
    },
    /// An address could not be added.
    #[error("adding address {address} to {interface}")]
    Address {
        /// The address.
        address: IpNet,
        /// The interface.
        interface: String,
        /// Why.
        #[source]
        source: NetlinkError,
    },
    /// A route names a device that is none of the pod's interfaces.
    #[error("route {route}: {device} is none of the pod's interfaces")]
    RouteDevice {
        /// The route.
        route: Route,
        /// Its device.
        device: String,
    },
    /// A route could not be added.
    #[error("adding route {route}")]
    Route {
        /// The route.
        route: Route,
        /// Why.
        #[source]
        source: NetlinkError,
    },
    /// A neighbour entry names a device that is none of the pod's
    /// interfaces.
    #[error("neighbour {neighbour}: {} is none of the pod's interfaces", neighbour.device)]
    NeighbourDevice {
        /// The neighbour entry.
        neighbour: Neighbour,
    },
    /// A neighbour entry could not be added.
    #[error("adding neighbour {neighbour}")]
    Neighbour {
        /// The neighbour entry.
        neighbour: Neighbour,
        /// Why.
        #[source]
        source: NetlinkError,
    },
}

/// Reproduces `network` in the calling thread's network namespace (the
/// guest's): loopback up; each interface's link, found by MAC, renamed to
/// the interface's name (while down), given its MTU and addresses and set
/// up; then the routes (those without a gateway first; one already there,
/// such as the subnet route the kernel adds with an address, is fine);
/// then the neighbour entries.
pub fn apply_in_guest(network: &PodNetwork) -> Result<(), ApplyError> {
    let mut socket = RtnlSocket::open().map_err(ApplyError::OpenNetlink)?;
    let links = list_links(&mut socket).map_err(ApplyError::ListLinks)?;
    if let Some(loopback) = links.iter().find(|link| link.loopback) {
        set_link_up(&mut socket, loopback.index, true).map_err(|source| ApplyError::Loopback {
            name: loopback.name.clone(),
            source,
        })?;
    }

    let mut indices: HashMap<&str, u32> = HashMap::new();
    for interface in &network.interfaces {
        let link = links
            .iter()
            .find(|link| link.mac == Some(interface.mac))
            .ok_or_else(|| ApplyError::NoLinkWithMac {
                mac: interface.mac,
                interface: interface.name.clone(),
            })?;
        configure_interface(&mut socket, interface, link)?;
        indices.insert(&interface.name, link.index);
    }

    let (direct, via_gateway): (Vec<&Route>, Vec<&Route>) = network
        .routes
        .iter()
        .partition(|route| route.gateway.is_none());
    for route in direct.into_iter().chain(via_gateway) {
        let index = *indices
            .get(route.device.as_str())
            .ok_or_else(|| ApplyError::RouteDevice {
                route: route.clone(),
                device: route.device.clone(),
            })?;
        add_route(&mut socket, route, index)
            .or_else(already_there)
            .map_err(|source| ApplyError::Route {
                route: route.clone(),
                source,
            })?;
    }

    for neighbour in &network.neighbours {
        let index =
            *indices
                .get(neighbour.device.as_str())
                .ok_or_else(|| ApplyError::NeighbourDevice {
                    neighbour: neighbour.clone(),
                })?;
        add_permanent_neighbour(&mut socket, index, neighbour.ip, neighbour.mac).map_err(
            |source| ApplyError::Neighbour {
                neighbour: neighbour.clone(),
                source,
            },
        )?;
    }
    Ok(())
}

fn configure_interface(
    socket: &mut RtnlSocket,
    interface: &Interface,
    link: &Link,
) -> Result<(), ApplyError> {
    let failed = |step: &'static str| {
        move |source| ApplyError::Interface {
            step,
            interface: interface.name.clone(),
            link: link.name.clone(),
            source,
        }
    };
    if link.name != interface.name {
        if link.up {
            set_link_up(socket, link.index, false)
                .map_err(failed("setting the link down to rename it"))?;
        }
        rename_link(socket, link.index, &interface.name).map_err(failed("renaming the link"))?;
    }
    if link.mtu != interface.mtu {
        set_link_mtu(socket, link.index, interface.mtu).map_err(failed("setting the MTU"))?;
    }
    for address in &interface.addresses {
        add_address(socket, link.index, *address)
            .or_else(already_there)
            .map_err(|source| ApplyError::Address {
                address: *address,
                interface: interface.name.clone(),
                source,
            })?;
    }
    set_link_up(socket, link.index, true).map_err(failed("setting the link up"))
}

/// `EEXIST` is success: what was to be added is there.
fn already_there(error: NetlinkError) -> Result<(), NetlinkError> {
    match error.errno() {
        Some(Errno::EEXIST) => Ok(()),
        _ => Err(error),
    }
}

#[cfg(test)]
#[path = "guest_tests.rs"]
mod tests;
