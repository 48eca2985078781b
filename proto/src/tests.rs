use super::*;
use crate::codec::{encode_to_vec, frame_len};
use proptest::prelude::*;
use serde::Serialize;
use std::collections::BTreeMap;

fn sample_task() -> TaskInfo {
    TaskInfo {
        task_id: TaskId::new("t1"),
        name: "hello".into(),
        agent_id: AgentId::new("a1"),
        resources: "cpus:0.5;mem:64MiB;ports:[31000-31001]".parse().unwrap(),
        command: CommandInfo::shell("echo hello"),
        container: ContainerSettings::default(),
        kill_grace_ms: Some(3000),
        labels: BTreeMap::new(),
    }
}

fn samples() -> Vec<ClientFrame> {
    vec![
        ClientFrame::Agent(AgentToMaster::Register {
            agent_id: None,
            info: AgentInfo {
                hostname: "h".into(),
                resources: "cpus:4;mem:4GiB".parse().unwrap(),
                attributes: BTreeMap::from([("rack".into(), "r1".into())]),
                version: ProtocolVersion::CURRENT,
                software_version: "0.1.0".into(),
                reserved: BTreeMap::from([("batch".into(), "cpus:1;mem:1GiB".parse().unwrap())]),
            },
            tasks: vec![TaskReport {
                framework_id: FrameworkId::new("f"),
                task: sample_task(),
                state: TaskState::Running,
            }],
        }),
        ClientFrame::Agent(AgentToMaster::Heartbeat),
        ClientFrame::Framework(FrameworkCall::Accept {
            offer_ids: vec![OfferId::new("o1")],
            operations: vec![OfferOperation::Launch {
                tasks: vec![sample_task()],
            }],
            filters: Some(Filters {
                refuse_seconds: Some(1.5),
            }),
        }),
        ClientFrame::Operator(OperatorCall::GetState),
    ]
}

#[test]
fn frames_round_trip() {
    for msg in samples() {
        let bytes = encode_to_vec(&msg, MAX_FRAME_LEN).unwrap();
        let (back, used): (ClientFrame, usize) = decode(&bytes, MAX_FRAME_LEN).unwrap().unwrap();
        assert_eq!(back, msg);
        assert_eq!(used, bytes.len());
    }
}

#[test]
fn partial_frames_wait_for_more_bytes() {
    let bytes = encode_to_vec(&samples()[0], MAX_FRAME_LEN).unwrap();
    for cut in 0..bytes.len() {
        let r: Option<(ClientFrame, usize)> = decode(&bytes[..cut], MAX_FRAME_LEN).unwrap();
        assert!(
            r.is_none(),
            "decoded a frame from {cut} of {} bytes",
            bytes.len()
        );
    }
}

#[test]
fn oversized_frame_is_refused_from_its_header() {
    let header = (1024u32 * 1024).to_be_bytes();
    let err = decode::<ClientFrame>(&header, 1000).unwrap_err();
    assert!(matches!(
        err,
        DecodeError::FrameTooLarge {
            len: 1048576,
            max: 1000
        }
    ));
    assert!(frame_len(header, 1000).is_err());
    let err = encode_to_vec(&samples()[0], 8).unwrap_err();
    assert!(matches!(err, EncodeError::FrameTooLarge { .. }));
}

#[test]
fn garbage_body_is_a_clear_error() {
    let mut bytes = vec![0, 0, 0, 3];
    bytes.extend_from_slice(&[0xc1, 0xff, 0x00]);
    let err = decode::<ClientFrame>(&bytes, MAX_FRAME_LEN).unwrap_err();
    assert!(err.to_string().starts_with("malformed frame"), "{err}");
}

// A message as a newer minor version would send it: same shape plus new optional fields,
// including inside a nested struct.
#[derive(Serialize)]
struct FutureAgentInfo {
    hostname: String,
    resources: Resources,
    attributes: BTreeMap<String, String>,
    version: ProtocolVersion,
    software_version: String,
    numa_nodes: Option<u32>,
    kernel: String,
}

#[derive(Serialize)]
enum FutureAgentToMaster {
    Register {
        agent_id: Option<AgentId>,
        info: FutureAgentInfo,
        tasks: Vec<TaskReport>,
        boot_id: String,
    },
}

#[derive(Serialize)]
enum FutureClientFrame {
    Agent(FutureAgentToMaster),
}

#[test]
fn older_peer_reads_messages_with_new_optional_fields() {
    let newer = FutureClientFrame::Agent(FutureAgentToMaster::Register {
        agent_id: Some(AgentId::new("a7")),
        info: FutureAgentInfo {
            hostname: "node7".into(),
            resources: "cpus:2;mem:1GiB".parse().unwrap(),
            attributes: BTreeMap::new(),
            version: ProtocolVersion { major: 1, minor: 1 },
            software_version: "0.2.0".into(),
            numa_nodes: Some(2),
            kernel: "6.18".into(),
        },
        tasks: vec![],
        boot_id: "b".into(),
    });
    let bytes = encode_to_vec(&newer, MAX_FRAME_LEN).unwrap();
    let (old, _): (ClientFrame, usize) = decode(&bytes, MAX_FRAME_LEN).unwrap().unwrap();
    match old {
        ClientFrame::Agent(AgentToMaster::Register { agent_id, info, .. }) => {
            assert_eq!(agent_id, Some(AgentId::new("a7")));
            assert_eq!(info.hostname, "node7");
            assert_eq!(info.version.minor, 1);
        }
        other => panic!("unexpected {other:?}"),
    }
}

// A message as an older minor version sent it: without fields added later.
#[derive(Serialize)]
struct PastTaskStatus {
    task_id: TaskId,
    state: TaskState,
    source: StatusSource,
}

#[test]
fn newer_peer_reads_messages_missing_new_fields() {
    let bytes = encode_to_vec(
        &PastTaskStatus {
            task_id: TaskId::new("t"),
            state: TaskState::Running,
            source: StatusSource::Agent,
        },
        MAX_FRAME_LEN,
    )
    .unwrap();
    let (st, _): (TaskStatus, usize) = decode(&bytes, MAX_FRAME_LEN).unwrap().unwrap();
    assert_eq!(st.state, TaskState::Running);
    assert_eq!(st.uuid, None);
    assert_eq!(st.limitation, None);
}

// A usage report as an agent before pressure sent it.
#[derive(Serialize)]
enum PastAgentToMaster {
    Usage { tasks: Vec<TaskUsage> },
}

#[derive(Serialize)]
enum PastClientFrame {
    Agent(PastAgentToMaster),
}

#[test]
fn usage_pressure_is_optional_both_ways() {
    let past = PastClientFrame::Agent(PastAgentToMaster::Usage { tasks: vec![] });
    let bytes = encode_to_vec(&past, MAX_FRAME_LEN).unwrap();
    let (now, _): (ClientFrame, usize) = decode(&bytes, MAX_FRAME_LEN).unwrap().unwrap();
    assert_eq!(
        now,
        ClientFrame::Agent(AgentToMaster::Usage {
            tasks: vec![],
            pressure: None
        })
    );
    let pressure = NodePressure {
        cpu_some_avg10: 1,
        memory_some_avg10: 41,
        memory_full_avg10: 12,
        io_some_avg10: 120,
        io_full_avg10: 10_000,
    };
    let frame = ClientFrame::Agent(AgentToMaster::Usage {
        tasks: vec![],
        pressure: Some(pressure),
    });
    let bytes = encode_to_vec(&frame, MAX_FRAME_LEN).unwrap();
    let (back, _): (ClientFrame, usize) = decode(&bytes, MAX_FRAME_LEN).unwrap().unwrap();
    assert_eq!(back, frame);
    assert_eq!(NodePressure::percent(41), "0.41");
    assert_eq!(NodePressure::percent(10_000), "100.00");
    let wild = NodePressure {
        io_full_avg10: u32::MAX,
        ..pressure
    };
    assert_eq!(wild.clamped().io_full_avg10, NodePressure::MAX);
    assert_eq!(wild.clamped().memory_some_avg10, 41);
}

#[test]
fn resources_parse_and_arithmetic() {
    let r: Resources = "cpus:4;mem:4GiB;disk:20GiB;ports:[31000-32000]"
        .parse()
        .unwrap();
    assert_eq!(r.cpus_milli, 4000);
    assert_eq!(r.mem_bytes, 4 << 30);
    assert_eq!(r.disk_bytes, 20 << 30);
    assert_eq!(r.port_count(), 1001);
    let t: Resources = "cpus:2;mem:1GiB;ports:[31000-31000]".parse().unwrap();
    let left = r.checked_sub(&t).unwrap();
    assert_eq!(left.cpus_milli, 2000);
    assert_eq!(
        left.ports,
        vec![PortRange {
            begin: 31001,
            end: 32000
        }]
    );
    assert_eq!(left.add(&t), r);
    assert!(t.checked_sub(&r).is_none());
    assert_eq!(parse_size("64MiB").unwrap(), 64 << 20);
    assert_eq!(parse_size("512M").unwrap(), 512 << 20);
    assert_eq!(parse_size("1GiB").unwrap(), 1 << 30);
    assert_eq!(parse_size("1234").unwrap(), 1234);
    assert!(parse_size("-1").is_err());
    assert!(parse_size("12 parsecs").is_err());
    assert!("cpus:-1".parse::<Resources>().is_err());
    assert!("gpus:1".parse::<Resources>().is_err());
    assert!("cpus:1;cpus:2".parse::<Resources>().is_err());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4096, max_shrink_time: 10_000, ..ProptestConfig::default() })]

    /// The decoder survives arbitrary bytes: it answers, it never panics.
    #[test]
    fn decoder_survives_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode::<ClientFrame>(&bytes, MAX_FRAME_LEN);
        let _ = decode::<ServerFrame>(&bytes, MAX_FRAME_LEN);
    }

    /// Arbitrary bodies behind a valid header: still no panic.
    #[test]
    fn decoder_survives_arbitrary_bodies(body in proptest::collection::vec(any::<u8>(), 0..512)) {
        let mut framed = (body.len() as u32).to_be_bytes().to_vec();
        framed.extend_from_slice(&body);
        let _ = decode::<ClientFrame>(&framed, MAX_FRAME_LEN);
        let _ = decode::<ServerFrame>(&framed, MAX_FRAME_LEN);
    }

    /// Mutating valid frames (the inputs most likely to reach deep into the decoder).
    #[test]
    fn decoder_survives_mutated_frames(which in 0usize..4, flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8)) {
        let mut bytes = encode_to_vec(&samples()[which], MAX_FRAME_LEN).unwrap();
        for (pos, val) in flips {
            let i = FRAME_HEADER_LEN + pos % (bytes.len() - FRAME_HEADER_LEN);
            bytes[i] = val;
        }
        let _ = decode::<ClientFrame>(&bytes, MAX_FRAME_LEN);
    }

    #[test]
    fn resources_sub_then_add_is_identity(c in 0u64..100_000, m in 0u64..(1u64<<40), c2 in 0u64..100_000, m2 in 0u64..(1u64<<40), p in 1000u16..2000, q in 1000u16..2000) {
        let a = Resources::new(c.max(c2), m.max(m2)).with_ports(vec![PortRange { begin: 1000, end: 2000 }]);
        let (lo, hi) = (p.min(q), p.max(q));
        let b = Resources::new(c.min(c2), m.min(m2)).with_ports(vec![PortRange { begin: lo, end: hi }]);
        let d = a.checked_sub(&b).unwrap();
        prop_assert_eq!(d.add(&b), a);
    }
}

#[test]
fn container_settings_without_an_oom_policy_decode_as_the_default() {
    #[derive(serde::Serialize)]
    struct OldSettings {
        network: NetworkMode,
        pids_limit: Option<u64>,
        cpu_hard_limit: Option<bool>,
    }
    let old = OldSettings {
        network: NetworkMode::Host,
        pids_limit: Some(64),
        cpu_hard_limit: None,
    };
    let bytes = rmp_serde::to_vec_named(&old).unwrap();
    let new: ContainerSettings = rmp_serde::from_slice(&bytes).unwrap();
    assert_eq!(new.oom_policy, None);
    assert_eq!(new.oom_policy.unwrap_or_default(), OomPolicy::KillTask);
    let mut with = new.clone();
    with.oom_policy = Some(OomPolicy::KillProcess);
    let back: ContainerSettings =
        rmp_serde::from_slice(&rmp_serde::to_vec_named(&with).unwrap()).unwrap();
    assert_eq!(back, with);
}

#[test]
fn oom_policies_parse_as_the_cli_spells_them() {
    for p in [OomPolicy::KillTask, OomPolicy::KillProcess] {
        assert_eq!(p.as_str().parse::<OomPolicy>(), Ok(p));
    }
    assert!("kill-all".parse::<OomPolicy>().is_err());
}
