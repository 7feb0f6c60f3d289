//! The pod's network as a `ConfigureNetwork` request: the host half of
//! the conversion (the agent checks and converts it back).

use husk_netlink::{Interface, IpNet, Mac, Neighbour, PodNetwork, Route};
use husk_protocol::agent::{
    self as pb, ConfigureNetworkRequest, NetworkInterface, NetworkNeighbour, NetworkRoute,
};

/// The `ConfigureNetwork` request that reproduces `network` in the guest.
/// Addresses travel in text form, absent ones as empty strings, and the
/// default route without a destination.
pub fn configure_network_request(network: &PodNetwork) -> ConfigureNetworkRequest {
    ConfigureNetworkRequest {
        interfaces: network.interfaces.iter().map(interface).collect(),
        routes: network.routes.iter().map(route).collect(),
        neighbours: network.neighbours.iter().map(neighbour).collect(),
        ..Default::default()
    }
}

fn ip_net(net: &IpNet) -> pb::IpNet {
    pb::IpNet {
        address: net.addr.to_string(),
        prefix_len: u32::from(net.prefix_len),
        ..Default::default()
    }
}

fn mac(mac: &Mac) -> Vec<u8> {
    mac.0.to_vec()
}

fn interface(i: &Interface) -> NetworkInterface {
    NetworkInterface {
        name: i.name.clone(),
        mac: mac(&i.mac),
        mtu: i.mtu,
        addresses: i.addresses.iter().map(ip_net).collect(),
        ..Default::default()
    }
}

fn route(r: &Route) -> NetworkRoute {
    let text = |a: Option<std::net::IpAddr>| a.map(|a| a.to_string()).unwrap_or_default();
    NetworkRoute {
        destination: r.destination.as_ref().map(ip_net).into(),
        gateway: text(r.gateway),
        source: text(r.source),
        device: r.device.clone(),
        scope: u32::from(r.scope),
        metric: r.metric,
        ..Default::default()
    }
}

fn neighbour(n: &Neighbour) -> NetworkNeighbour {
    NetworkNeighbour {
        ip: n.ip.to_string(),
        mac: mac(&n.mac),
        device: n.device.clone(),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_route_has_no_destination_and_absent_addresses_are_empty() {
        let network = PodNetwork {
            interfaces: vec![Interface {
                name: "eth0".into(),
                mac: Mac([0x02, 0, 0, 0, 0, 0x2a]),
                mtu: 1500,
                addresses: vec![IpNet {
                    addr: "fd00::5".parse().unwrap(),
                    prefix_len: 64,
                }],
            }],
            routes: vec![Route {
                destination: None,
                gateway: Some("10.88.0.1".parse().unwrap()),
                source: None,
                device: "eth0".into(),
                scope: 0,
                metric: 100,
            }],
            neighbours: vec![Neighbour {
                ip: "10.88.0.1".parse().unwrap(),
                mac: Mac([0xee; 6]),
                device: "eth0".into(),
            }],
        };
        let req = configure_network_request(&network);
        let eth0 = &req.interfaces[0];
        assert_eq!(
            (eth0.name.as_str(), eth0.mac.as_slice(), eth0.mtu),
            ("eth0", &[0x02, 0, 0, 0, 0, 0x2a][..], 1500)
        );
        assert_eq!(eth0.addresses[0].address, "fd00::5");
        assert_eq!(eth0.addresses[0].prefix_len, 64);
        let default = &req.routes[0];
        assert!(default.destination.is_none());
        assert_eq!(default.gateway, "10.88.0.1");
        assert_eq!(default.source, "");
        assert_eq!((default.scope, default.metric), (0, 100));
        assert_eq!(req.neighbours[0].ip, "10.88.0.1");
        assert_eq!(req.neighbours[0].mac, vec![0xee; 6]);
    }

    #[test]
    fn the_request_survives_the_wire() {
        use protobuf::Message;
        let network = PodNetwork {
            interfaces: vec![],
            routes: vec![Route {
                destination: Some(IpNet {
                    addr: "10.88.0.0".parse().unwrap(),
                    prefix_len: 16,
                }),
                gateway: None,
                source: Some("10.88.0.5".parse().unwrap()),
                device: "eth0".into(),
                scope: 253,
                metric: 0,
            }],
            neighbours: vec![],
        };
        let req = configure_network_request(&network);
        let bytes = req.write_to_bytes().unwrap();
        assert_eq!(
            ConfigureNetworkRequest::parse_from_bytes(&bytes).unwrap(),
            req
        );
        assert_eq!(
            configure_network_request(&PodNetwork::default())
                .write_to_bytes()
                .unwrap(),
            Vec::<u8>::new()
        );
    }
}
