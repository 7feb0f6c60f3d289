//! A pod's network as inert data: read from its namespace on the host,
//! carried to the agent, applied in the guest.

use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// An address with its prefix length (`10.88.0.5/16`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct IpNet {
    /// The address.
    pub addr: IpAddr,
    /// Prefix length: at most 32 for IPv4, 128 for IPv6.
    pub prefix_len: u8,
}

/// A MAC address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Mac(pub [u8; 6]);

/// One interface of the pod's namespace, as the guest gets it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interface {
    /// Its name in the pod's namespace (`eth0`); the guest's interface
    /// gets the same name.
    pub name: String,
    /// Its MAC, which the guest's NIC keeps.
    pub mac: Mac,
    /// Its MTU.
    pub mtu: u32,
    /// Its addresses (IPv6 link-local ones left out: the guest makes its
    /// own from the same MAC).
    pub addresses: Vec<IpNet>,
}

/// One route of the pod's namespace (main table).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    /// Destination; `None` is the default route.
    pub destination: Option<IpNet>,
    /// Next hop, if any.
    pub gateway: Option<IpAddr>,
    /// Preferred source address, if any.
    pub source: Option<IpAddr>,
    /// The interface it goes out of, by name.
    pub device: String,
    /// `RT_SCOPE_*` (0 universe, 253 link, 254 host).
    pub scope: u8,
    /// Priority (metric); 0 when unset.
    pub metric: u32,
}

/// A static ARP/NDP entry of the pod's namespace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Neighbour {
    /// The neighbour's address.
    pub ip: IpAddr,
    /// Its MAC.
    pub mac: Mac,
    /// The interface, by name.
    pub device: String,
}

/// Everything of a pod's network namespace the guest reproduces.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodNetwork {
    /// Interfaces other than loopback, in ifindex order.
    pub interfaces: Vec<Interface>,
    /// Routes of the main table through those interfaces.
    pub routes: Vec<Route>,
    /// Permanent neighbour entries on those interfaces.
    pub neighbours: Vec<Neighbour>,
}

impl fmt::Display for IpNet {
    /// `10.88.0.5/16`, `fd00::5/64`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

impl fmt::Display for Mac {
    /// `02:42:ac:11:00:02`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl fmt::Display for Route {
    /// As `ip route` shows it: `default via 10.88.0.1 dev eth0`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.destination {
            Some(destination) => write!(f, "{destination}")?,
            None => f.write_str("default")?,
        }
        if let Some(gateway) = self.gateway {
            write!(f, " via {gateway}")?;
        }
        write!(f, " dev {}", self.device)?;
        if let Some(source) = self.source {
            write!(f, " src {source}")?;
        }
        match self.scope {
            0 => {}
            253 => f.write_str(" scope link")?,
            254 => f.write_str(" scope host")?,
            scope => write!(f, " scope {scope}")?,
        }
        if self.metric != 0 {
            write!(f, " metric {}", self.metric)?;
        }
        Ok(())
    }
}

impl fmt::Display for Neighbour {
    /// As `ip neigh` shows it: `10.88.0.1 dev eth0 lladdr 02:42:…`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} dev {} lladdr {}", self.ip, self.device, self.mac)
    }
}
