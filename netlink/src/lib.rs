//! Network namespaces through rtnetlink, synchronously and without an
//! async runtime (the agent is one small static binary).
//!
//! On the host, [`read_pod_network`] reads what CNI or Docker put into a
//! pod's network namespace, [`attach_taps`] joins each of its links to a
//! tap for the VMM with tc redirects, and [`detach_taps`] parts them. In
//! the guest, [`apply_in_guest`] reproduces the same network on the
//! guest's NICs.
//!
//! Thread model: work in another namespace runs on a scoped thread that
//! joins it first ([`in_netns`]); its netlink socket and `/dev/net/tun`
//! are opened there. The caller's threads never change namespace.

#![deny(missing_docs)]

mod address;
mod attach;
mod guest;
mod link;
mod neighbour;
mod netns;
mod read;
mod route;
mod socket;
mod tap;
mod tc;
pub mod types;

#[cfg(test)]
mod fixture;

pub use attach::{attach_taps, detach_taps, AttachError, AttachStep, DetachError};
pub use guest::{apply_in_guest, ApplyError};
pub use netns::{in_netns, NetnsError};
pub use read::{read_pod_network, ReadNetworkError};
pub use socket::NetlinkError;
pub use tap::{CreateTapError, Tap, TAP_PREFIX};
pub use types::{Interface, IpNet, Mac, Neighbour, PodNetwork, Route};
