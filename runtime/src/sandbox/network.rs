//! Joining a pod's network namespace to its microVM: each link CNI or
//! Docker put there gets a tap with tc redirects both ways (husk-netlink),
//! the VMM gets the taps, the agent gets the addresses and routes; and the
//! redirects are parted again when the pod ends, also after a crash.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use husk_netlink::{AttachError, Mac, PodNetwork, ReadNetworkError, Tap};
use serde::{Deserialize, Serialize};

/// Why a pod's network could not be joined.
#[derive(Debug, thiserror::Error)]
pub enum JoinNetworkError {
    /// Its namespace could not be read, or holds what husk cannot attach.
    #[error("pod network")]
    Read(#[source] ReadNetworkError),
    /// The taps or redirects could not be made (nothing is left).
    #[error("pod network")]
    Attach(#[source] AttachError),
    /// Links appeared in the namespace after the VM started.
    #[error(
        "interface(s) {} were added to the pod's network namespace {netns:?} after its microVM \
         started: virtio-mmio has no hotplug, so husk attaches only the interfaces present when \
         the sandbox starts (add them before the pod sandbox is created)",
        added.join(", ")
    )]
    AddedLater {
        /// The namespace.
        netns: PathBuf,
        /// The new links.
        added: Vec<String>,
    },
}

/// What to undo when the pod ends: kept in the pod's state so that a
/// later `delete` finds it after a crash.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkRecord {
    /// The pod's network namespace.
    pub netns: PathBuf,
    /// Its links that carry a redirect to a tap.
    pub links: Vec<String>,
}

impl NetworkRecord {
    /// Removes the redirects from the pod's links (the taps went with the
    /// VMM). Idempotent; a failure is logged, since the namespace's owner
    /// (CNI, Docker) removes the links with it in the end.
    pub fn part(&self) {
        if self.links.is_empty() {
            return;
        }
        if let Err(e) = husk_netlink::detach_taps(&self.netns, &self.links) {
            log::warn!(
                "cannot remove the tc redirects in {:?}: {}",
                self.netns,
                crate::error_chain(&e)
            );
        }
    }
}

/// A pod network joined to taps, parted again when dropped.
#[derive(Debug)]
pub struct JoinedNetwork {
    /// What the guest reproduces.
    pub network: PodNetwork,
    record: NetworkRecord,
    taps: Vec<Tap>,
}

impl JoinedNetwork {
    /// Reads the namespace at `netns` and joins each of its links to a tap.
    pub fn join(netns: &Path) -> Result<Self, JoinNetworkError> {
        let network = husk_netlink::read_pod_network(netns).map_err(JoinNetworkError::Read)?;
        // A namespace with only loopback (the usual `--network none`, a
        // fresh one) needs no trip into it to attach nothing.
        let taps = if network.interfaces.is_empty() {
            Vec::new()
        } else {
            husk_netlink::attach_taps(netns, &network).map_err(JoinNetworkError::Attach)?
        };
        let record = NetworkRecord {
            netns: netns.to_path_buf(),
            links: taps.iter().map(|t| t.link.clone()).collect(),
        };
        Ok(Self {
            network,
            record,
            taps,
        })
    }

    /// Fails if the namespace now has links the VM was not given (an
    /// interface a CNI plugin added after the sandbox started).
    pub fn check_no_links_added(&self) -> Result<(), JoinNetworkError> {
        let now =
            husk_netlink::read_pod_network(&self.record.netns).map_err(JoinNetworkError::Read)?;
        let added: Vec<String> = now
            .interfaces
            .iter()
            .filter(|i| !self.network.interfaces.iter().any(|j| j.name == i.name))
            .map(|i| i.name.clone())
            .collect();
        if added.is_empty() {
            Ok(())
        } else {
            Err(JoinNetworkError::AddedLater {
                netns: self.record.netns.clone(),
                added,
            })
        }
    }

    /// What `delete` needs to part it after a crash.
    pub fn record(&self) -> &NetworkRecord {
        &self.record
    }

    /// Each NIC the guest gets: its link's MAC and MTU, in tap order.
    pub fn nics(&self) -> Vec<(Mac, u32)> {
        self.taps.iter().map(|t| (t.mac, t.mtu)).collect()
    }

    /// The tap file descriptors, for the VMM process; ours are gone after
    /// this, so each tap vanishes with the VMM.
    pub fn take_tap_fds(&mut self) -> Vec<OwnedFd> {
        std::mem::take(&mut self.taps)
            .into_iter()
            .map(|t| t.fd)
            .collect()
    }
}

impl Drop for JoinedNetwork {
    fn drop(&mut self) {
        self.record.part();
    }
}
