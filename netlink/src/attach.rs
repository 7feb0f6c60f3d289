//! Joining a pod's links to taps for the VMM, and parting them again.
//!
//! For each link: a tap, an ingress qdisc on both, and on each a u32
//! catch-all filter that redirects every packet to the other's egress.
//! Frames from the pod's network reach the VMM through the tap; frames the
//! guest sends leave through the link. The link keeps its addresses; the
//! guest's NIC takes the link's MAC.

use std::fmt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;

use crate::link::{find_link, list_links, set_link_mtu, set_link_up};
use crate::netns::{in_netns, NetnsError};
use crate::socket::{NetlinkError, RtnlSocket};
use crate::tap::{create_tap, CreateTapError, Tap, TAP_PREFIX};
use crate::tc::{add_ingress_qdisc, add_redirect_filter, delete_ingress_qdisc, has_ingress_qdisc};
use crate::types::PodNetwork;

/// A step of [`attach_taps`], as its errors name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttachStep {
    /// Listing the namespace's links.
    ListLinks,
    /// Setting the tap's MTU to the link's.
    SetTapMtu,
    /// Setting the tap up.
    SetTapUp,
    /// Adding the ingress qdisc on the link.
    LinkIngressQdisc,
    /// Adding the ingress qdisc on the tap.
    TapIngressQdisc,
    /// Adding the link → tap redirect.
    RedirectLinkToTap,
    /// Adding the tap → link redirect.
    RedirectTapToLink,
}

impl fmt::Display for AttachStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::ListLinks => "listing links",
            Self::SetTapMtu => "setting the tap's MTU",
            Self::SetTapUp => "setting the tap up",
            Self::LinkIngressQdisc => "adding the link's ingress qdisc",
            Self::TapIngressQdisc => "adding the tap's ingress qdisc",
            Self::RedirectLinkToTap => "redirecting the link's ingress to the tap",
            Self::RedirectTapToLink => "redirecting the tap's ingress to the link",
        })
    }
}

/// Attaching taps failed; whatever had been done was undone.
#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    /// The namespace could not be entered.
    #[error(transparent)]
    Netns(#[from] NetnsError),
    /// Netlink could not be opened in the namespace.
    #[error("opening netlink in {}", netns.display())]
    OpenNetlink {
        /// The namespace.
        netns: PathBuf,
        /// Why.
        #[source]
        source: NetlinkError,
    },
    /// A link of the pod's network is not in the namespace.
    #[error("interface {link} is not in {}", netns.display())]
    LinkNotFound {
        /// The link's name.
        link: String,
        /// The namespace.
        netns: PathBuf,
    },
    /// The tap could not be created.
    #[error("attaching {tap} to {link} in {}", netns.display())]
    CreateTap {
        /// The tap's name.
        tap: String,
        /// The link's name.
        link: String,
        /// The namespace.
        netns: PathBuf,
        /// Why.
        #[source]
        source: CreateTapError,
    },
    /// The tap was made but is not among the namespace's links.
    #[error("tap {tap} is missing from {} right after it was made", netns.display())]
    TapMissing {
        /// The tap's name.
        tap: String,
        /// The namespace.
        netns: PathBuf,
    },
    /// A netlink step failed.
    #[error("attaching {tap} to {link} in {}: {step}", netns.display())]
    Netlink {
        /// The step.
        step: AttachStep,
        /// The tap's name.
        tap: String,
        /// The link's name.
        link: String,
        /// The namespace.
        netns: PathBuf,
        /// Why.
        #[source]
        source: NetlinkError,
    },
}

/// Detaching taps failed.
#[derive(Debug, thiserror::Error)]
pub enum DetachError {
    /// The namespace exists but could not be entered.
    #[error(transparent)]
    Netns(NetnsError),
    /// Netlink could not be opened, or the links not listed.
    #[error("listing links in {}", netns.display())]
    ListLinks {
        /// The namespace.
        netns: PathBuf,
        /// Why.
        #[source]
        source: NetlinkError,
    },
    /// A link's ingress qdisc could not be listed or removed.
    #[error("removing the ingress qdisc of {link} in {}", netns.display())]
    RemoveQdisc {
        /// The link.
        link: String,
        /// The namespace.
        netns: PathBuf,
        /// Why.
        #[source]
        source: NetlinkError,
    },
}

/// For interface `i` of `network`, in the namespace at `netns`: creates the
/// tap `husktap{i}` (`IFF_TAP | IFF_NO_PI | IFF_VNET_HDR`, not persistent)
/// with the link's MTU, sets it up, gives both an ingress qdisc and
/// redirects each one's ingress to the other's egress.
///
/// On error, everything done so far is undone (link qdiscs removed, taps
/// closed, which takes their qdiscs with them) and the error names the step
/// and the link.
pub fn attach_taps(netns: &Path, network: &PodNetwork) -> Result<Vec<Tap>, AttachError> {
    in_netns(netns, || {
        let mut socket = RtnlSocket::open().map_err(|source| AttachError::OpenNetlink {
            netns: netns.to_path_buf(),
            source,
        })?;
        let mut attached = Attached::default();
        match attach_all(netns, network, &mut socket, &mut attached) {
            Ok(()) => Ok(attached.taps),
            Err(error) => {
                attached.undo(&mut socket);
                Err(error)
            }
        }
    })?
}

/// What [`attach_all`] has done so far, to undo on failure.
#[derive(Default)]
struct Attached {
    taps: Vec<Tap>,
    link_qdiscs: Vec<(u32, String)>,
}

impl Attached {
    fn undo(self, socket: &mut RtnlSocket) {
        for (index, name) in self.link_qdiscs {
            if let Err(error) = delete_ingress_qdisc(socket, index) {
                log::warn!("undoing attach: removing the ingress qdisc of {name}: {error}");
            }
        }
        // Closing a tap's last fd removes it, with its qdisc and filter.
        drop(self.taps);
    }
}

fn attach_all(
    netns: &Path,
    network: &PodNetwork,
    socket: &mut RtnlSocket,
    attached: &mut Attached,
) -> Result<(), AttachError> {
    let step_failed = |step: AttachStep, tap: &str, link: &str| {
        let (tap, link) = (tap.to_owned(), link.to_owned());
        move |source| AttachError::Netlink {
            step,
            tap,
            link,
            netns: netns.to_path_buf(),
            source,
        }
    };
    for (i, interface) in network.interfaces.iter().enumerate() {
        let tap_name = format!("{TAP_PREFIX}{i}");
        let failed = |step| step_failed(step, &tap_name, &interface.name);
        let links = list_links(socket).map_err(failed(AttachStep::ListLinks))?;
        let link = find_link(&links, &interface.name).ok_or_else(|| AttachError::LinkNotFound {
            link: interface.name.clone(),
            netns: netns.to_path_buf(),
        })?;
        let (link_index, link_mtu) = (link.index, link.mtu);

        let fd = create_tap(&tap_name).map_err(|source| AttachError::CreateTap {
            tap: tap_name.clone(),
            link: interface.name.clone(),
            netns: netns.to_path_buf(),
            source,
        })?;
        attached.taps.push(Tap {
            fd,
            name: tap_name.clone(),
            link: interface.name.clone(),
            mac: interface.mac,
            mtu: link_mtu,
        });
        let links = list_links(socket).map_err(failed(AttachStep::ListLinks))?;
        let tap_index = find_link(&links, &tap_name)
            .map(|tap| tap.index)
            .ok_or_else(|| AttachError::TapMissing {
                tap: tap_name.clone(),
                netns: netns.to_path_buf(),
            })?;

        set_link_mtu(socket, tap_index, link_mtu).map_err(failed(AttachStep::SetTapMtu))?;
        set_link_up(socket, tap_index, true).map_err(failed(AttachStep::SetTapUp))?;
        add_ingress_qdisc(socket, link_index).map_err(failed(AttachStep::LinkIngressQdisc))?;
        attached
            .link_qdiscs
            .push((link_index, interface.name.clone()));
        add_ingress_qdisc(socket, tap_index).map_err(failed(AttachStep::TapIngressQdisc))?;
        add_redirect_filter(socket, link_index, tap_index)
            .map_err(failed(AttachStep::RedirectLinkToTap))?;
        add_redirect_filter(socket, tap_index, link_index)
            .map_err(failed(AttachStep::RedirectTapToLink))?;
        log::debug!(
            "{tap_name} joined to {} in {}",
            interface.name,
            netns.display()
        );
    }
    Ok(())
}

/// Removes the ingress qdiscs (and with them the redirects) that
/// [`attach_taps`] put on `links` in the namespace at `netns`. The taps
/// take their own with them when they vanish.
///
/// Idempotent: a namespace or link that is gone, or a link without an
/// ingress qdisc, is success.
pub fn detach_taps(netns: &Path, links: &[String]) -> Result<(), DetachError> {
    let result = in_netns(netns, || {
        let listing_failed = |source| DetachError::ListLinks {
            netns: netns.to_path_buf(),
            source,
        };
        let failed = |link: &str| {
            let link = link.to_owned();
            move |source| DetachError::RemoveQdisc {
                link,
                netns: netns.to_path_buf(),
                source,
            }
        };
        let mut socket = RtnlSocket::open().map_err(listing_failed)?;
        let present = list_links(&mut socket).map_err(listing_failed)?;
        for name in links {
            let Some(link) = find_link(&present, name) else {
                log::debug!("detach: {name} is gone from {}", netns.display());
                continue;
            };
            if !has_ingress_qdisc(&mut socket, link.index).map_err(failed(name))? {
                log::debug!("detach: {name} has no ingress qdisc");
                continue;
            }
            match delete_ingress_qdisc(&mut socket, link.index) {
                Ok(()) => {}
                // Gone since it was listed.
                Err(error) if matches!(error.errno(), Some(Errno::ENOENT | Errno::ENODEV)) => {}
                Err(error) => return Err(failed(name)(error)),
            }
        }
        Ok(())
    });
    match result {
        Ok(result) => result,
        Err(NetnsError::NotFound { path } | NetnsError::NotANamespace { path }) => {
            log::debug!("detach: network namespace {} is gone", path.display());
            Ok(())
        }
        Err(error) => Err(DetachError::Netns(error)),
    }
}

#[cfg(test)]
#[path = "attach_tests.rs"]
mod tests;
