//! Reading what CNI or Docker put into a pod's network namespace.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use netlink_packet_route::route::RouteType;

use crate::address::{is_ipv6_link_local, list_addresses};
use crate::link::{list_links, Link};
use crate::neighbour::list_permanent_neighbours;
use crate::netns::{in_netns, NetnsError};
use crate::route::{list_main_routes, TableRoute};
use crate::socket::{NetlinkError, RtnlSocket};
use crate::tap::TAP_PREFIX;
use crate::types::{Interface, IpNet, Neighbour, PodNetwork, Route};

/// Reading a pod's network failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadNetworkError {
    /// The namespace could not be entered.
    #[error(transparent)]
    Netns(#[from] NetnsError),
    /// A netlink request failed.
    #[error("{what} in {}", netns.display())]
    Netlink {
        /// What was being read (`listing links`…).
        what: &'static str,
        /// The namespace.
        netns: PathBuf,
        /// Why.
        #[source]
        source: NetlinkError,
    },
    /// A link is not Ethernet: the guest's virtio NIC could not stand in
    /// for it.
    #[error(
        "interface {link} in {} is not an Ethernet interface (it is a {kind} link without a MAC)",
        netns.display()
    )]
    NotEthernet {
        /// The link's name.
        link: String,
        /// Its kind (`tun`, `ipip`…).
        kind: String,
        /// The namespace.
        netns: PathBuf,
    },
    /// A link has no IP address (IPv6 link-local ones left aside).
    #[error("interface {link} in {} has no IP address", netns.display())]
    NoAddress {
        /// The link's name.
        link: String,
        /// The namespace.
        netns: PathBuf,
    },
    /// A route has several next hops; husk reproduces single-path routes.
    #[error("route to {destination} in {} has several next hops, which husk does not reproduce", netns.display())]
    Multipath {
        /// The route's destination.
        destination: IpNet,
        /// The namespace.
        netns: PathBuf,
    },
}

/// Reads the network of the pod whose namespace is at `netns`
/// (`/var/run/netns/NAME`, `/proc/PID/ns/net`).
///
/// - Interfaces: every link but loopback and husk's own taps
///   ([`TAP_PREFIX`]), each with its MAC, MTU and addresses (IPv6
///   link-local ones left out). A link that is down and has no address (a
///   kernel's fallback device such as `tunl0` or `gretap0`) is skipped;
///   every other must be Ethernet and have an address.
/// - Routes: the main table's unicast routes through those interfaces,
///   but IPv6 link-local ones, which the guest's kernel makes itself. A
///   default route is `destination: None`, except an IPv6 one with neither
///   gateway nor source to tell its family by, which is `::/0`.
/// - Neighbours: permanent entries on those interfaces.
pub fn read_pod_network(netns: &Path) -> Result<PodNetwork, ReadNetworkError> {
    in_netns(netns, || read_current_network(netns))?
}

/// [`read_pod_network`] for the calling thread's own namespace; `netns`
/// only names it in errors.
fn read_current_network(netns: &Path) -> Result<PodNetwork, ReadNetworkError> {
    let failed = |what| {
        move |source| ReadNetworkError::Netlink {
            what,
            netns: netns.to_path_buf(),
            source,
        }
    };
    let mut socket = RtnlSocket::open().map_err(failed("opening netlink"))?;
    let links = list_links(&mut socket).map_err(failed("listing links"))?;
    let addresses = list_addresses(&mut socket).map_err(failed("listing addresses"))?;
    let routes = list_main_routes(&mut socket).map_err(failed("listing routes"))?;
    let neighbours =
        list_permanent_neighbours(&mut socket).map_err(failed("listing neighbours"))?;

    let mut interfaces = Vec::new();
    let mut names: HashMap<u32, String> = HashMap::new();
    for link in links.iter().filter(|link| is_pod_link(link)) {
        let link_addresses: Vec<IpNet> = addresses
            .iter()
            .filter(|address| address.link_index == link.index)
            .map(|address| address.address)
            .filter(|address| !is_ipv6_link_local(address.addr))
            .collect();
        // A link that is down and has no address carries nothing: the
        // fallback devices a kernel puts into every namespace once their
        // module is loaded (tunl0, sit0, gretap0, erspan0…) look like that.
        if !link.up && link_addresses.is_empty() {
            log::debug!(
                "skipping {} link {} in {}: down, no address",
                link.kind,
                link.name,
                netns.display()
            );
            continue;
        }
        let Some(mac) = link.mac else {
            return Err(ReadNetworkError::NotEthernet {
                link: link.name.clone(),
                kind: link.kind.clone(),
                netns: netns.to_path_buf(),
            });
        };
        if link_addresses.is_empty() {
            return Err(ReadNetworkError::NoAddress {
                link: link.name.clone(),
                netns: netns.to_path_buf(),
            });
        }
        names.insert(link.index, link.name.clone());
        interfaces.push(Interface {
            name: link.name.clone(),
            mac,
            mtu: link.mtu,
            addresses: link_addresses,
        });
    }

    let mut pod_routes = Vec::new();
    for route in routes.into_iter().filter(is_reproduced_route) {
        if route.multipath {
            return Err(ReadNetworkError::Multipath {
                destination: route.destination,
                netns: netns.to_path_buf(),
            });
        }
        let Some(device) = route.link_index.and_then(|index| names.get(&index)) else {
            continue;
        };
        pod_routes.push(pod_route(&route, device.clone()));
    }

    let pod_neighbours = neighbours
        .into_iter()
        .filter_map(|neighbour| {
            Some(Neighbour {
                device: names.get(&neighbour.link_index)?.clone(),
                ip: neighbour.ip,
                mac: neighbour.mac,
            })
        })
        .collect();

    Ok(PodNetwork {
        interfaces,
        routes: pod_routes,
        neighbours: pod_neighbours,
    })
}

fn is_pod_link(link: &Link) -> bool {
    !link.loopback && !link.name.starts_with(TAP_PREFIX)
}

/// Unicast routes but IPv6 link-local ones (`fe80::/64`, which the guest's
/// kernel adds with the link-local address it makes).
fn is_reproduced_route(route: &TableRoute) -> bool {
    route.kind == RouteType::Unicast
        && !(route.ipv6
            && route.destination.prefix_len >= 10
            && is_ipv6_link_local(route.destination.addr))
}

fn pod_route(route: &TableRoute, device: String) -> Route {
    let is_default = route.destination.prefix_len == 0;
    let family_known = route.gateway.is_some() || route.source.is_some() || !route.ipv6;
    Route {
        destination: (!is_default || !family_known).then_some(route.destination),
        gateway: route.gateway,
        source: route.source,
        device,
        scope: route.scope,
        metric: route.metric,
    }
}

#[cfg(test)]
#[path = "read_tests.rs"]
pub(crate) mod tests;
