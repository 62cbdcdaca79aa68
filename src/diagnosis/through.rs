//! Diagnosis through a forward (DESIGN, "Through a forward"): a port of
//! this host forwarded to a backend in a namespace of this host is judged
//! by the backend's listeners there, and the words name the container and
//! the backend. A proxy listening on the host port never hides them.

use crate::sockets::Listener;

use super::words::{listening_on, port_name};
use super::{Cause, ForwardStatus, Input};

/// `published to container web-1 (10.77.50.2:80)`, `forwarded (dnat) to
/// 10.0.0.5:80 on another host`, `redirected to 127.0.0.1:9090 on this host`.
pub(super) fn where_to(f: &ForwardStatus) -> String {
    let b = f.backend;
    let verb = match f.via {
        "redirect" => "redirected".to_string(),
        via => format!("forwarded ({via})"),
    };
    match (&f.netns, f.on_this_host) {
        (Some(ns), _) => match (&ns.pod, &ns.container) {
            (Some(pod), _) => format!("published to pod {pod} ({b})"),
            (None, Some(_)) => format!("published to container {} ({b})", ns.name),
            (None, None) => format!("{verb} to network namespace {} ({b})", ns.name),
        },
        (None, true) => format!("{verb} to {b} on this host"),
        (None, false) => format!("{verb} to {b} on another host"),
    }
}

/// Inside the container, the pod, or on this host.
fn inside(f: &ForwardStatus) -> &'static str {
    match &f.netns {
        Some(ns) if ns.pod.is_some() => " inside the pod",
        Some(ns) if ns.container.is_some() => " inside the container",
        Some(_) => " inside its network namespace",
        None => "",
    }
}

/// The summary and fix of a forward whose backend has `cause`.
pub(super) fn broken(input: &Input, f: &ForwardStatus, cause: Cause) -> (String, String) {
    let port = port_name(input);
    let to = where_to(f);
    let bport = f.backend.port();
    let ls: &[Listener] = &f.backend_listeners;
    let inside = inside(f);
    match cause {
        Cause::NotListening => (
            format!("port {port} is {to}, where nothing listens on port {bport}"),
            format!(
                "start the app{inside}, or make it listen on port {bport} (the port the forward goes to)"
            ),
        ),
        Cause::LoopbackOnly => (
            format!(
                "port {port} is {to}, where the app is {} only",
                listening_on(ls)
            ),
            format!(
                "bind 0.0.0.0 (or ::){inside}: a forward reaches {}, not its loopback",
                f.backend.ip()
            ),
        ),
        Cause::AddressFamilyMismatch => (
            format!(
                "port {port} is {to}, where the app is {} (the other address family only)",
                listening_on(ls)
            ),
            format!("listen on both families{inside}: bind :: with IPV6_V6ONLY=0, or add a socket"),
        ),
        _ => (
            format!(
                "port {port} is {to}, where the app is {}, not on {}",
                listening_on(ls),
                f.backend.ip()
            ),
            format!("bind 0.0.0.0 / ::{inside}, or to {}", f.backend.ip()),
        ),
    }
}

/// The evidence line of a forward.
pub(super) fn evidence(f: &ForwardStatus) -> String {
    let mut line = where_to(f);
    if let Some(rule) = &f.rule {
        line.push_str(&format!(" by {rule}"));
    }
    if f.on_this_host {
        if f.backend_listeners.is_empty() {
            line.push_str(&format!(
                "; nothing listens on port {} there",
                f.backend.port()
            ));
        } else {
            line.push_str(&format!("; there: {}", listening_on(&f.backend_listeners)));
        }
    }
    line
}
