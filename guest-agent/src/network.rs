//! `ConfigureNetwork`: the request checked and converted back to the pod's
//! network, then applied to the guest through rtnetlink.

use std::net::IpAddr;

use husk_netlink::{Interface, IpNet, Mac, Neighbour, PodNetwork, Route};
use husk_protocol::agent::{
    self as pb, ConfigureNetworkRequest, NetworkInterface, NetworkNeighbour, NetworkRoute,
};

/// Longest interface name (`IFNAMSIZ` less its NUL).
const MAX_INTERFACE_NAME: usize = 15;

/// A field of a `ConfigureNetwork` request that cannot be right.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct InvalidNetworkError {
    /// The field and item, e.g. `interfaces[1].addresses[0]`.
    pub field: String,
    /// What is wrong with it.
    pub reason: String,
}

fn invalid(field: &str, reason: impl Into<String>) -> InvalidNetworkError {
    InvalidNetworkError {
        field: field.to_string(),
        reason: reason.into(),
    }
}

/// Why ConfigureNetwork failed.
#[derive(Debug, thiserror::Error)]
pub enum ConfigureNetworkError {
    /// The request is wrong.
    #[error("{0}")]
    Invalid(InvalidNetworkError),
    /// The agent runs as a host process, whose network is the host's.
    #[error(
        "the agent runs as a host process: it does not configure networks \
         (that would reconfigure the host's own)"
    )]
    HostMode,
    /// The guest's network could not be set up as asked.
    #[error("cannot configure the guest's network")]
    Apply(#[source] husk_netlink::ApplyError),
}

/// Checks the request and reproduces its network in the guest. The request
/// is checked in host mode too (so a bad one reads the same everywhere)
/// before host mode refuses to go on.
pub fn configure_network(
    in_guest: bool,
    req: &ConfigureNetworkRequest,
) -> Result<(), ConfigureNetworkError> {
    let network = pod_network(req).map_err(ConfigureNetworkError::Invalid)?;
    if !in_guest {
        return Err(ConfigureNetworkError::HostMode);
    }
    husk_netlink::apply_in_guest(&network).map_err(ConfigureNetworkError::Apply)?;
    log::info!(
        "network configured: {} interfaces, {} routes, {} neighbours",
        network.interfaces.len(),
        network.routes.len(),
        network.neighbours.len()
    );
    Ok(())
}

/// The pod's network a request describes, each field checked: addresses
/// parse and their prefixes fit, MACs are 6 bytes, interface names are
/// valid and distinct, and routes and neighbours name one of them.
pub fn pod_network(req: &ConfigureNetworkRequest) -> Result<PodNetwork, InvalidNetworkError> {
    let interfaces = req
        .interfaces
        .iter()
        .enumerate()
        .map(|(i, x)| interface(&format!("interfaces[{i}]"), x))
        .collect::<Result<Vec<_>, _>>()?;
    for (i, x) in interfaces.iter().enumerate() {
        if let Some(first) = interfaces[..i].iter().position(|y| y.name == x.name) {
            return Err(invalid(
                &format!("interfaces[{i}].name"),
                format!("{:?} is the name of interfaces[{first}] too", x.name),
            ));
        }
    }
    let names: Vec<&str> = interfaces.iter().map(|x| x.name.as_str()).collect();
    let routes = req
        .routes
        .iter()
        .enumerate()
        .map(|(i, x)| route(&format!("routes[{i}]"), x, &names))
        .collect::<Result<Vec<_>, _>>()?;
    let neighbours = req
        .neighbours
        .iter()
        .enumerate()
        .map(|(i, x)| neighbour(&format!("neighbours[{i}]"), x, &names))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(PodNetwork {
        interfaces,
        routes,
        neighbours,
    })
}

fn interface(field: &str, x: &NetworkInterface) -> Result<Interface, InvalidNetworkError> {
    let addresses = x
        .addresses
        .iter()
        .enumerate()
        .map(|(i, a)| ip_net(&format!("{field}.addresses[{i}]"), a))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Interface {
        name: interface_name(&format!("{field}.name"), &x.name)?,
        mac: mac(&format!("{field}.mac"), &x.mac)?,
        mtu: x.mtu,
        addresses,
    })
}

fn route(field: &str, x: &NetworkRoute, names: &[&str]) -> Result<Route, InvalidNetworkError> {
    let destination = match x.destination.as_ref() {
        Some(d) => Some(ip_net(&format!("{field}.destination"), d)?),
        None => None,
    };
    let scope = u8::try_from(x.scope).map_err(|_| {
        invalid(
            &format!("{field}.scope"),
            format!("{} is over 255", x.scope),
        )
    })?;
    Ok(Route {
        destination,
        gateway: optional_ip(&format!("{field}.gateway"), &x.gateway)?,
        source: optional_ip(&format!("{field}.source"), &x.source)?,
        device: device(&format!("{field}.device"), &x.device, names)?,
        scope,
        metric: x.metric,
    })
}

fn neighbour(
    field: &str,
    x: &NetworkNeighbour,
    names: &[&str],
) -> Result<Neighbour, InvalidNetworkError> {
    Ok(Neighbour {
        ip: ip(&format!("{field}.ip"), &x.ip)?,
        mac: mac(&format!("{field}.mac"), &x.mac)?,
        device: device(&format!("{field}.device"), &x.device, names)?,
    })
}

fn ip(field: &str, text: &str) -> Result<IpAddr, InvalidNetworkError> {
    if text.is_empty() {
        return Err(invalid(field, "empty"));
    }
    text.parse()
        .map_err(|_| invalid(field, format!("{text:?} is not an IP address")))
}

/// An address that may be absent (empty).
fn optional_ip(field: &str, text: &str) -> Result<Option<IpAddr>, InvalidNetworkError> {
    if text.is_empty() {
        return Ok(None);
    }
    ip(field, text).map(Some)
}

fn ip_net(field: &str, x: &pb::IpNet) -> Result<IpNet, InvalidNetworkError> {
    let addr = ip(field, &x.address)?;
    let (family, max) = match addr {
        IpAddr::V4(_) => ("IPv4", 32),
        IpAddr::V6(_) => ("IPv6", 128),
    };
    match u8::try_from(x.prefix_len) {
        Ok(prefix_len) if prefix_len <= max => Ok(IpNet { addr, prefix_len }),
        _ => Err(invalid(
            field,
            format!("prefix {} is too long for {family}", x.prefix_len),
        )),
    }
}

fn mac(field: &str, bytes: &[u8]) -> Result<Mac, InvalidNetworkError> {
    <[u8; 6]>::try_from(bytes)
        .map(Mac)
        .map_err(|_| invalid(field, format!("{} bytes, not 6", bytes.len())))
}

/// A name the kernel takes for an interface (its `dev_valid_name`).
fn interface_name(field: &str, name: &str) -> Result<String, InvalidNetworkError> {
    if name.is_empty() {
        return Err(invalid(field, "empty"));
    }
    if name.len() > MAX_INTERFACE_NAME {
        return Err(invalid(
            field,
            format!(
                "{name:?} is {} bytes, longer than {MAX_INTERFACE_NAME}",
                name.len()
            ),
        ));
    }
    if name == "." || name == ".." {
        return Err(invalid(field, format!("{name:?} is not an interface name")));
    }
    if let Some(c) = name
        .chars()
        .find(|c| *c == '/' || *c == ':' || c.is_whitespace() || *c == '\0')
    {
        return Err(invalid(
            field,
            format!("{name:?} has {c:?}, which interface names cannot have"),
        ));
    }
    Ok(name.to_string())
}

/// The name of one of the request's interfaces.
fn device(field: &str, name: &str, names: &[&str]) -> Result<String, InvalidNetworkError> {
    if name.is_empty() {
        return Err(invalid(field, "empty"));
    }
    if !names.contains(&name) {
        return Err(invalid(
            field,
            format!("{name:?} is not one of the request's interfaces"),
        ));
    }
    Ok(name.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use husk::agent::configure_network_request;

    fn net(addr: &str, prefix_len: u8) -> IpNet {
        IpNet {
            addr: addr.parse().unwrap(),
            prefix_len,
        }
    }

    /// Two interfaces, IPv4 and IPv6, a default route of each family, an
    /// on-link route with a source and no gateway, and neighbours.
    fn pod() -> PodNetwork {
        PodNetwork {
            interfaces: vec![
                Interface {
                    name: "eth0".into(),
                    mac: Mac([0x02, 0x42, 0x0a, 0x58, 0x00, 0x05]),
                    mtu: 1500,
                    addresses: vec![net("10.88.0.5", 16), net("fd00:88::5", 64)],
                },
                Interface {
                    name: "net1".into(),
                    mac: Mac([0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff]),
                    mtu: 9000,
                    addresses: vec![],
                },
            ],
            routes: vec![
                Route {
                    destination: None,
                    gateway: Some("10.88.0.1".parse().unwrap()),
                    source: None,
                    device: "eth0".into(),
                    scope: 0,
                    metric: 0,
                },
                Route {
                    destination: None,
                    gateway: Some("fe80::1".parse().unwrap()),
                    source: None,
                    device: "eth0".into(),
                    scope: 0,
                    metric: 1024,
                },
                Route {
                    destination: Some(net("10.88.0.0", 16)),
                    gateway: None,
                    source: Some("10.88.0.5".parse().unwrap()),
                    device: "eth0".into(),
                    scope: 253,
                    metric: 0,
                },
                Route {
                    destination: Some(net("2001:db8::", 32)),
                    gateway: Some("2001:db8::1".parse().unwrap()),
                    source: Some("fd00:88::5".parse().unwrap()),
                    device: "net1".into(),
                    scope: 0,
                    metric: 7,
                },
            ],
            neighbours: vec![
                Neighbour {
                    ip: "10.88.0.1".parse().unwrap(),
                    mac: Mac([0xee; 6]),
                    device: "eth0".into(),
                },
                Neighbour {
                    ip: "fe80::1".parse().unwrap(),
                    mac: Mac([0xee; 6]),
                    device: "net1".into(),
                },
            ],
        }
    }

    /// The error of `pod()`'s request after `change`.
    fn error_after(change: impl FnOnce(&mut ConfigureNetworkRequest)) -> String {
        let mut req = configure_network_request(&pod());
        change(&mut req);
        pod_network(&req).unwrap_err().to_string()
    }

    #[test]
    fn the_pods_network_survives_the_round_trip() {
        let network = pod();
        let req = configure_network_request(&network);
        assert_eq!(pod_network(&req).unwrap(), network);
        let empty = PodNetwork::default();
        assert_eq!(
            pod_network(&configure_network_request(&empty)).unwrap(),
            empty
        );
    }

    #[test]
    fn addresses_must_parse_and_their_prefixes_fit() {
        assert_eq!(
            error_after(|r| r.interfaces[0].addresses[0].address = "10.88.0.300".into()),
            "interfaces[0].addresses[0]: \"10.88.0.300\" is not an IP address"
        );
        assert_eq!(
            error_after(|r| r.interfaces[1].addresses.push(pb::IpNet {
                address: "10.0.0.1".into(),
                prefix_len: 40,
                ..Default::default()
            })),
            "interfaces[1].addresses[0]: prefix 40 is too long for IPv4"
        );
        assert_eq!(
            error_after(|r| r.interfaces[0].addresses[1].prefix_len = 129),
            "interfaces[0].addresses[1]: prefix 129 is too long for IPv6"
        );
        assert_eq!(
            error_after(|r| r.interfaces[0].addresses[1].prefix_len = 256 + 64),
            "interfaces[0].addresses[1]: prefix 320 is too long for IPv6"
        );
        assert_eq!(
            error_after(|r| r.interfaces[0].addresses[0].address.clear()),
            "interfaces[0].addresses[0]: empty"
        );
        assert_eq!(
            error_after(|r| r.routes[2].destination.as_mut().unwrap().prefix_len = 33),
            "routes[2].destination: prefix 33 is too long for IPv4"
        );
        assert_eq!(
            error_after(|r| r.routes[0].gateway = "gw".into()),
            "routes[0].gateway: \"gw\" is not an IP address"
        );
        assert_eq!(
            error_after(|r| r.routes[3].source = "fd00::/64".into()),
            "routes[3].source: \"fd00::/64\" is not an IP address"
        );
        assert_eq!(
            error_after(|r| r.neighbours[1].ip.clear()),
            "neighbours[1].ip: empty"
        );
    }

    #[test]
    fn macs_are_six_bytes() {
        assert_eq!(
            error_after(|r| {
                r.interfaces[1].mac.pop();
            }),
            "interfaces[1].mac: 5 bytes, not 6"
        );
        assert_eq!(
            error_after(|r| r.interfaces[0].mac.clear()),
            "interfaces[0].mac: 0 bytes, not 6"
        );
        assert_eq!(
            error_after(|r| r.neighbours[0].mac.push(0)),
            "neighbours[0].mac: 7 bytes, not 6"
        );
    }

    #[test]
    fn interface_names_are_what_the_kernel_takes_and_distinct() {
        assert_eq!(
            error_after(|r| r.interfaces[0].name.clear()),
            "interfaces[0].name: empty"
        );
        assert_eq!(
            error_after(|r| r.interfaces[1].name = "a-very-long-name".into()),
            "interfaces[1].name: \"a-very-long-name\" is 16 bytes, longer than 15"
        );
        assert_eq!(
            error_after(|r| r.interfaces[1].name = "net/1".into()),
            "interfaces[1].name: \"net/1\" has '/', which interface names cannot have"
        );
        assert_eq!(
            error_after(|r| r.interfaces[1].name = "..".into()),
            "interfaces[1].name: \"..\" is not an interface name"
        );
        assert_eq!(
            error_after(|r| r.interfaces[1].name = "eth0".into()),
            "interfaces[1].name: \"eth0\" is the name of interfaces[0] too"
        );
        // Fifteen bytes is the most a name can have.
        let mut req = configure_network_request(&pod());
        req.interfaces[1].name = "fifteen-bytes-x".into();
        req.routes[3].device = "fifteen-bytes-x".into();
        req.neighbours[1].device = "fifteen-bytes-x".into();
        assert!(pod_network(&req).is_ok());
    }

    #[test]
    fn routes_and_neighbours_name_an_interface_of_the_request() {
        assert_eq!(
            error_after(|r| r.routes[1].device = "eth9".into()),
            "routes[1].device: \"eth9\" is not one of the request's interfaces"
        );
        assert_eq!(
            error_after(|r| r.routes[0].device.clear()),
            "routes[0].device: empty"
        );
        assert_eq!(
            error_after(|r| r.neighbours[1].device = "lo".into()),
            "neighbours[1].device: \"lo\" is not one of the request's interfaces"
        );
        assert_eq!(
            error_after(|r| r.routes[0].scope = 256),
            "routes[0].scope: 256 is over 255"
        );
    }

    #[test]
    fn host_mode_checks_the_request_then_refuses() {
        let req = configure_network_request(&pod());
        assert!(matches!(
            configure_network(false, &req),
            Err(ConfigureNetworkError::HostMode)
        ));
        let mut bad = req;
        bad.interfaces[0].mac.clear();
        assert!(matches!(
            configure_network(false, &bad),
            Err(ConfigureNetworkError::Invalid(e)) if e.field == "interfaces[0].mac"
        ));
    }
}
