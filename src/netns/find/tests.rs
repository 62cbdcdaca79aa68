use std::os::unix::fs::symlink;

use super::*;

const ID: &str = "3f4e5d6c7b8a99887766554433221100ffeeddccbbaa00112233445566778899";
const UID: &str = "1b2c3d4e-5f60-7182-93a4-b5c6d7e8f901";

#[test]
fn namespace_links() {
    assert_eq!(parse_ns_link("net:[4026531840]", "net"), Some(4026531840));
    assert_eq!(parse_ns_link("uts:[7]", "net"), None);
    assert_eq!(parse_ns_link("net:[x]", "net"), None);
    assert_eq!(parse_ns_link("net:4026531840", "net"), None);
}

#[test]
fn container_ids_from_each_runtime_s_cgroup_paths() {
    let short = Some(ID[..12].to_string());
    for text in [
        format!("12:pids:/docker/{ID}\n0::/docker/{ID}\n"),
        format!("0::/system.slice/docker-{ID}.scope\n"),
        format!(
            "0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1b2c.slice/cri-containerd-{ID}.scope\n"
        ),
        format!("1:name=systemd:/kubepods-besteffort-pod1b2c.slice:cri-containerd:{ID}\n"),
        format!("0::/kubepods.slice/crio-{ID}.scope\n"),
        format!("0::/machine.slice/libpod-{ID}.scope/container\n"),
        format!("4:memory:/kubepods/besteffort/pod{UID}/{ID}\n"),
    ] {
        assert_eq!(container_id(&text), short, "{text}");
    }
}

#[test]
fn no_container_id_where_the_path_names_none() {
    let other = "ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff";
    for text in [
        "0::/\n".to_string(),
        "0::/user.slice/user-0.slice/session-3.scope\n".to_string(),
        format!("0::/system.slice/crio-conmon-{ID}.scope\n"),
        format!("0::/system.slice/docker-{}.scope\n", &ID[..63]),
        format!("0::/system.slice/unknown-{ID}.scope\n"),
        "garbage without colons".to_string(),
        String::new(),
    ] {
        assert_eq!(container_id(&text), None, "{text}");
    }
    let nested = format!("0::/docker/{other}/docker/{ID}\n");
    assert_eq!(
        container_id(&nested).as_deref(),
        Some(&ID[..12]),
        "the innermost"
    );
}

#[test]
fn pod_uids_from_cgroupfs_and_systemd_paths() {
    let underscored = UID.replace('-', "_");
    for text in [
        format!("0::/kubepods/besteffort/pod{UID}/{ID}\n"),
        format!("3:cpu:/kubepods/pod{UID}/{ID}\n"),
        format!(
            "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{underscored}.slice/cri-containerd-{ID}.scope\n"
        ),
        format!("0::/kubepods.slice/kubepods-pod{underscored}.slice/crio-{ID}.scope\n"),
        format!("1:name=systemd:/kubepods-besteffort-pod{underscored}.slice:cri-containerd:{ID}\n"),
    ] {
        assert_eq!(pod_uid(&text).as_deref(), Some(UID), "{text}");
    }
    for text in [
        format!("0::/pod{UID}/{ID}\n"),
        format!("0::/kubepods/besteffort/pod{}/\n", &UID[..35]),
        format!("0::/docker/{ID}\n"),
    ] {
        assert_eq!(pod_uid(&text), None, "{text}");
    }
}

#[test]
fn pod_directories() {
    assert_eq!(
        parse_pod_dir(&format!("default_web-0_{UID}")),
        Some((UID.to_string(), "default/web-0".to_string()))
    );
    for bad in [
        format!("default_web-0_{}", &UID[1..]),
        format!("default_web_0_{UID}"),
        format!("_web-0_{UID}"),
        "default_web-0".to_string(),
        "README".to_string(),
    ] {
        assert_eq!(parse_pod_dir(&bad), None, "{bad}");
    }
}

/// A fixture `/proc`, pods root and `/run/netns` in a tempdir.
struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new(pid1_net: u64) -> Fixture {
        let f = Fixture {
            dir: tempfile::tempdir().unwrap(),
        };
        for d in ["proc", "pods", "netns"] {
            std::fs::create_dir(f.dir.path().join(d)).unwrap();
        }
        f.process("self", 1, 10, None);
        f.process("1", pid1_net, 10, None);
        f
    }

    fn roots(&self) -> Roots {
        Roots {
            proc_root: self.dir.path().join("proc"),
            pods_root: self.dir.path().join("pods"),
            run_netns: self.dir.path().join("netns"),
        }
    }

    fn process(&self, pid: &str, net: u64, uts: u64, cgroup: Option<&str>) {
        let dir = self.dir.path().join("proc").join(pid);
        std::fs::create_dir_all(dir.join("ns")).unwrap();
        symlink(format!("net:[{net}]"), dir.join("ns/net")).unwrap();
        symlink(format!("uts:[{uts}]"), dir.join("ns/uts")).unwrap();
        std::fs::write(dir.join("cgroup"), cgroup.unwrap_or("0::/\n")).unwrap();
    }

    /// Moves `pid` to network namespace `net` (`setns`, `unshare`).
    fn move_to(&self, pid: &str, net: u64) {
        let link = self.dir.path().join("proc").join(pid).join("ns/net");
        std::fs::remove_file(&link).unwrap();
        symlink(format!("net:[{net}]"), link).unwrap();
    }

    /// An `ip netns` file (and hard links to it): its inode.
    fn ip_netns(&self, names: &[&str]) -> u64 {
        let first = self.dir.path().join("netns").join(names[0]);
        std::fs::write(&first, "").unwrap();
        for name in &names[1..] {
            std::fs::hard_link(&first, self.dir.path().join("netns").join(name)).unwrap();
        }
        std::fs::metadata(&first).unwrap().ino()
    }
}

fn by_name(found: &Found) -> BTreeMap<String, &Seen> {
    found
        .namespaces
        .iter()
        .map(|s| (s.ns.name.clone(), s))
        .collect()
}

#[test]
fn a_fixture_world_is_found_deduplicated_and_named_in_design_order() {
    let f = Fixture::new(1);
    let other = "ab".repeat(32);
    f.process("2", 1, 10, Some("0::/\n"));
    // A container with its own hostname, two processes.
    f.process("101", 500, 600, Some(&format!("0::/docker/{ID}\n")));
    f.process("100", 500, 600, Some(&format!("0::/docker/{ID}\n")));
    // A pod (with a hostname of its own too: the pod wins).
    std::fs::create_dir(f.dir.path().join(format!("pods/default_api-0_{UID}"))).unwrap();
    let pod_cgroup = format!("0::/kubepods/besteffort/pod{UID}/{other}\n");
    f.process("200", 501, 601, Some(&pod_cgroup));
    // A container sharing portsight's UTS namespace.
    f.process(
        "300",
        502,
        10,
        Some(&format!("0::/system.slice/docker-{other}.scope\n")),
    );
    // Only an `ip netns` name (a CNI one too, which comes last).
    let plain = f.ip_netns(&["cni-5e6f", "plain"]);
    f.process("400", plain, 10, None);
    f.process("500", 503, 10, Some("0::/\n"));
    // One hostname, two namespaces.
    f.process("600", 504, 610, None);
    f.process("601", 505, 611, None);
    // Exited mid-walk: a directory left without its links.
    std::fs::create_dir(f.dir.path().join("proc/700")).unwrap();
    // The lowest pid that gives the best name.
    f.process("800", 506, 10, None);
    let third = "cd".repeat(32);
    f.process("801", 506, 10, Some(&format!("0::/docker/{third}\n")));
    f.process("802", 506, 10, Some(&format!("0::/docker/{ID}\n")));

    let mut asked = Vec::new();
    let found = find_with(&f.roots(), &mut Known::default(), |wanted| {
        asked = wanted.iter().map(|(uts, _)| *uts).collect();
        HashMap::from([
            (600, "web-1".to_string()),
            (601, "pod-host".to_string()),
            (610, "twin".to_string()),
            (611, "twin".to_string()),
        ])
    })
    .unwrap();
    assert_eq!(asked, [600, 610, 611], "not the pod's, not portsight's own");
    assert_eq!(found.own, 1);
    assert_eq!(found.unreadable, 0);
    let names = by_name(&found);
    let short = |id: &str| Some(id[..12].to_string());
    let mut expected = vec![
        &other[..12],
        &third[..12],
        "default/api-0",
        "netns-503",
        "plain",
        "twin-504",
        "twin-505",
        "web-1",
    ];
    expected.sort();
    assert_eq!(
        names.keys().map(String::as_str).collect::<Vec<_>>(),
        expected
    );
    let web = names["web-1"];
    assert_eq!((web.pid, web.ns.inode), (100, 500));
    assert_eq!(web.ns.container, short(ID));
    assert_eq!(web.ns.pod, None);
    assert_eq!(web.handle, f.roots().proc_root.join("100/ns/net"));
    let pod = names["default/api-0"];
    assert_eq!(
        (pod.ns.container.clone(), pod.ns.pod.as_deref()),
        (short(&other), Some("default/api-0"))
    );
    let shared_uts = names[&other[..12]];
    assert_eq!((shared_uts.pid, shared_uts.ns.inode), (300, 502));
    let plain_ns = names["plain"];
    assert_eq!(plain_ns.handle, f.roots().run_netns.join("plain"));
    assert_eq!(names["netns-503"].ns.container, None);
    assert_eq!(names["twin-504"].pid, 600);
    assert_eq!(names["twin-505"].pid, 601);
    let best = found.namespaces.iter().find(|s| s.ns.inode == 506).unwrap();
    assert_eq!((best.ns.name.as_str(), best.pid), (&third[..12], 801));
    assert_eq!(best.ns.container, short(&third));
    assert!(
        found
            .namespaces
            .iter()
            .all(|s| s.ns.id == NsId::named(&s.ns.name))
    );
}

#[test]
fn outside_pid_1_s_network_namespace_nothing_is_looked_at() {
    let f = Fixture::new(2);
    f.process("100", 500, 600, Some(&format!("0::/docker/{ID}\n")));
    let err = find_with(&f.roots(), &mut Known::default(), |_| {
        panic!("no hostnames may be read")
    })
    .unwrap_err();
    assert!(
        matches!(err, Error::NotHostNetwork { own: 1, pid1: 2 }),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        "portsight is not in the network namespace of PID 1 of its PID namespace \
         (net:[1], PID 1 is in net:[2]): not looking into other namespaces"
    );
}

#[test]
fn without_pid_1_s_link_it_refuses_and_says_which_file() {
    let f = Fixture::new(1);
    std::fs::remove_file(f.dir.path().join("proc/1/ns/net")).unwrap();
    let err = find_with(&f.roots(), &mut Known::default(), |_| HashMap::new()).unwrap_err();
    assert!(err.to_string().contains("proc/1/ns/net"), "{err}");
}

#[test]
fn a_pod_uid_without_its_directory_is_not_a_pod_name() {
    let f = Fixture::new(1);
    f.process(
        "100",
        500,
        10,
        Some(&format!("0::/kubepods/pod{UID}/{ID}\n")),
    );
    let found = find_with(&f.roots(), &mut Known::default(), |_| HashMap::new()).unwrap();
    let seen = &found.namespaces[0];
    assert_eq!(
        (seen.ns.name.as_str(), seen.ns.pod.as_deref()),
        (&ID[..12], None)
    );
}

#[test]
fn a_process_that_exits_mid_walk_is_skipped_and_so_is_a_namespace_left_without_any() {
    let f = Fixture::new(1);
    f.process("100", 500, 10, Some(&format!("0::/docker/{ID}\n")));
    f.process("101", 500, 10, None);
    f.process("200", 501, 10, None);
    // Their links read, then gone before their cgroup is.
    for pid in ["100", "200"] {
        std::fs::remove_file(f.dir.path().join("proc").join(pid).join("cgroup")).unwrap();
    }
    let found = find_with(&f.roots(), &mut Known::default(), |_| HashMap::new()).unwrap();
    let seen: Vec<(u64, u32, &str)> = found
        .namespaces
        .iter()
        .map(|s| (s.ns.inode, s.pid, s.ns.name.as_str()))
        .collect();
    assert_eq!(seen, [(500, 101, "netns-500")]);
}

#[test]
fn between_full_walks_only_new_processes_are_read_and_gone_ones_go_at_once() {
    let f = Fixture::new(1);
    f.process("100", 500, 10, None);
    f.process("200", 1, 10, None);
    let mut known = Known::default();
    let inodes = |known: &mut Known| -> Vec<(u64, u32)> {
        let found = find_with(&f.roots(), known, |_| HashMap::new()).unwrap();
        found
            .namespaces
            .iter()
            .map(|s| (s.ns.inode, s.pid))
            .collect()
    };
    assert_eq!(inodes(&mut known), [(500, 100)]);
    // A new process in a new namespace is seen at the next walk.
    f.process("300", 600, 10, None);
    assert_eq!(inodes(&mut known), [(500, 100), (600, 300)]);
    // One that exits goes at the next walk, and its namespace with it.
    std::fs::remove_dir_all(f.dir.path().join("proc/100")).unwrap();
    assert_eq!(inodes(&mut known), [(600, 300)]);
    // One that forks first and moves right after (`unshare -n CMD`) is
    // read again at the next walk.
    f.process("400", 1, 10, None);
    assert_eq!(inodes(&mut known), [(600, 300)]);
    f.move_to("400", 800);
    assert_eq!(inodes(&mut known), [(600, 300), (800, 400)]);
    // A process that moves later without a new pid (setns, unshare) is
    // seen by the next full walk, not before.
    f.move_to("200", 700);
    let mut walks: u32 = 5;
    while !walks.is_multiple_of(FULL_WALK_EVERY) {
        assert_eq!(inodes(&mut known), [(600, 300), (800, 400)], "walk {walks}");
        walks += 1;
    }
    assert_eq!(inodes(&mut known), [(600, 300), (700, 200), (800, 400)]);
    // A fresh cache reads every link.
    assert_eq!(
        inodes(&mut Known::default()),
        [(600, 300), (700, 200), (800, 400)]
    );
}

#[test]
fn a_member_s_cgroup_is_read_when_new_once_more_and_on_full_walks() {
    let f = Fixture::new(1);
    f.process("100", 500, 10, None);
    let mut known = Known::default();
    let mut names = || -> Vec<String> {
        let found = find_with(&f.roots(), &mut known, |_| HashMap::new()).unwrap();
        found.namespaces.iter().map(|s| s.ns.name.clone()).collect()
    };
    let docker = format!("0::/docker/{ID}\n");
    let cgroup = |pid: &str| f.dir.path().join("proc").join(pid).join("cgroup");
    assert_eq!(names(), ["netns-500"], "walk 1, a full one");
    // A runtime moves its new process into the container's cgroup right
    // after fork: the next walk reads it again.
    f.process("101", 600, 10, None);
    assert_eq!(names(), ["netns-500", "netns-600"], "walk 2");
    std::fs::write(cgroup("101"), &docker).unwrap();
    assert_eq!(names(), ["netns-500", &ID[..12]], "walk 3");
    // After that, as read, until the next full walk.
    std::fs::write(cgroup("100"), &docker).unwrap();
    for walk in 4..=FULL_WALK_EVERY {
        assert_eq!(names(), ["netns-500", &ID[..12]], "walk {walk}");
    }
    let both = format!("{}-500", &ID[..12]);
    assert_eq!(
        names(),
        [both.as_str(), &format!("{}-600", &ID[..12])],
        "walk {}, a full one: two namespaces of one container name",
        FULL_WALK_EVERY + 1
    );
}
