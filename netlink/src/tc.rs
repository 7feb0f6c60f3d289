//! Traffic control: the ingress qdisc and the catch-all redirect that
//! joins a pod's link and its tap.
//!
//! The catch-all filter is `u32` with one key that matches everything
//! (`match u32 0 0`): `matchall` and `flower` are not built into every
//! kernel husk meets, `u32` is.

use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::tc::{
    TcAction, TcActionAttribute, TcActionMirror, TcActionMirrorOption, TcActionOption,
    TcActionType, TcAttribute, TcFilterU32Option, TcHandle, TcMessage, TcMirror,
    TcMirrorActionType, TcOption, TcU32Key, TcU32Selector, TcU32SelectorFlags,
};
use netlink_packet_route::RouteNetlinkMessage;

use crate::socket::{NetlinkError, RtnlSocket};

/// The ingress qdisc's handle, `ffff:`.
const INGRESS_HANDLE: TcHandle = TcHandle {
    major: 0xffff,
    minor: 0,
};
/// `ETH_P_ALL` in network byte order, as `tcm_info` carries it.
const PROTOCOL_ALL: u16 = (libc::ETH_P_ALL as u16).to_be();

fn ingress_qdisc_message(link_index: u32) -> TcMessage {
    let mut message = TcMessage::with_index(link_index as i32);
    message.header.handle = INGRESS_HANDLE;
    message.header.parent = TcHandle::INGRESS;
    message.attributes.push(TcAttribute::Kind("ingress".into()));
    message
}

/// Adds an ingress qdisc (`ffff:`) to link `link_index`; fails with
/// `EEXIST` if the link has one already.
pub(crate) fn add_ingress_qdisc(
    socket: &mut RtnlSocket,
    link_index: u32,
) -> Result<(), NetlinkError> {
    socket.request(
        RouteNetlinkMessage::NewQueueDiscipline(ingress_qdisc_message(link_index)),
        NLM_F_CREATE | NLM_F_EXCL,
    )
}

/// Whether link `link_index` has an ingress qdisc (not a `clsact`, which
/// sits at the same place).
pub(crate) fn has_ingress_qdisc(
    socket: &mut RtnlSocket,
    link_index: u32,
) -> Result<bool, NetlinkError> {
    let replies = socket.dump(RouteNetlinkMessage::GetQueueDiscipline(TcMessage::default()))?;
    Ok(replies.into_iter().any(|reply| match reply {
        RouteNetlinkMessage::NewQueueDiscipline(message) => {
            message.header.index == link_index as i32
                && message.header.parent == TcHandle::INGRESS
                && message.attributes.iter().any(
                    |attribute| matches!(attribute, TcAttribute::Kind(kind) if kind == "ingress"),
                )
        }
        _ => false,
    }))
}

/// Removes the ingress qdisc of link `link_index`, and its filters with
/// it. The kernel answers `ENOENT` or `EINVAL` when there is none: only
/// call this for a qdisc known to be there.
pub(crate) fn delete_ingress_qdisc(
    socket: &mut RtnlSocket,
    link_index: u32,
) -> Result<(), NetlinkError> {
    socket.request(
        RouteNetlinkMessage::DelQueueDiscipline(ingress_qdisc_message(link_index)),
        0,
    )
}

/// On the ingress qdisc of link `from_index`, a u32 filter for every
/// protocol that matches every packet and redirects it to the egress of
/// link `to_index` (`action mirred egress redirect`).
pub(crate) fn add_redirect_filter(
    socket: &mut RtnlSocket,
    from_index: u32,
    to_index: u32,
) -> Result<(), NetlinkError> {
    let mut message = TcMessage::with_index(from_index as i32);
    message.header.parent = INGRESS_HANDLE;
    // Priority 0: the kernel picks one. The low half is the protocol.
    message.header.info = u32::from(PROTOCOL_ALL);
    message.attributes.push(TcAttribute::Kind("u32".into()));
    message.attributes.push(TcAttribute::Options(vec![
        TcOption::U32(TcFilterU32Option::Selector(match_everything())),
        TcOption::U32(TcFilterU32Option::Action(vec![redirect_to(to_index)])),
    ]));
    socket.request(
        RouteNetlinkMessage::NewTrafficFilter(message),
        NLM_F_CREATE | NLM_F_EXCL,
    )
}

/// One key, mask 0 value 0 at offset 0: every packet matches. Terminal,
/// as `tc` makes it when the filter has actions.
fn match_everything() -> TcU32Selector {
    let mut selector = TcU32Selector::default();
    selector.flags = TcU32SelectorFlags::Terminal;
    selector.nkeys = 1;
    selector.keys = vec![TcU32Key::default()];
    selector
}

/// `mirred egress redirect dev <to_index>`; the packet is stolen from the
/// link it arrived on.
fn redirect_to(to_index: u32) -> TcAction {
    let mut parameters = TcMirror::default();
    parameters.generic.action = TcActionType::Stolen;
    parameters.eaction = TcMirrorActionType::EgressRedir;
    parameters.ifindex = to_index;
    let mut action = TcAction::default();
    action.tab = 1;
    action.attributes = vec![
        TcActionAttribute::Kind(TcActionMirror::KIND.into()),
        TcActionAttribute::Options(vec![TcActionOption::Mirror(TcActionMirrorOption::Parms(
            parameters,
        ))]),
    ];
    action
}
