use std::time::{Duration, Instant};
use isolation::*;
fn main() {
    let init = std::path::PathBuf::from("/work/main/target/release/isolation-test-init");
    let dir = std::path::PathBuf::from("/work/main/target/tmp/prof");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("sb")).unwrap();
    let mut cfg = IsolatorConfig::new(&init, vec!["__init".into()]);
    cfg.cgroup_parent = Some("corral-prof".into());
    cfg.run_root = dir.join("run");
    let iso = Isolator::new(cfg).unwrap();
    let base = {
        let mut s = ContainerSpec::new(vec!["/bin/true".into()], dir.join("sb"));
        s.pids_limit = Some(64); s.memory_bytes = Some(64<<20); s.cpus = Some(1.0);
        s
    };
    let variants: Vec<(&str, Box<dyn Fn(&mut ContainerSpec)>)> = vec![
        ("all", Box::new(|_s: &mut ContainerSpec| {})),
        ("no ns", Box::new(|s: &mut ContainerSpec| { s.namespaces = Namespaces{pid:false,mount:false,uts:false,ipc:false,network:NetworkNs::Host}; })),
        ("pid only", Box::new(|s: &mut ContainerSpec| { s.namespaces = Namespaces{pid:true,mount:false,uts:false,ipc:false,network:NetworkNs::Host}; })),
        ("mnt only", Box::new(|s: &mut ContainerSpec| { s.namespaces = Namespaces{pid:false,mount:true,uts:false,ipc:false,network:NetworkNs::Host}; })),
        ("ipc only", Box::new(|s: &mut ContainerSpec| { s.namespaces = Namespaces{pid:false,mount:false,uts:false,ipc:true,network:NetworkNs::Host}; })),
    ];
    for (name, f) in &variants {
        let mut s = base.clone(); f(&mut s);
        let mut run = vec![]; let mut del = vec![]; let mut ex = vec![];
        for i in 0..60 {
            let t = Instant::now();
            let c = iso.launch(&format!("p{i}"), &s).unwrap();
            run.push(t.elapsed());
            c.wait().unwrap();
            ex.push(t.elapsed());
            let t2 = Instant::now();
            c.destroy().unwrap();
            del.push(t2.elapsed());
        }
        run.sort(); del.sort(); ex.sort();
        println!("{name:10} run p50 {:?} exit p50 {:?} destroy p50 {:?}", run[30], ex[30], del[30]);
    }
    // breakdown of cgroup create/remove alone
    let mut t_c = Duration::ZERO;
    for i in 0..60 {
        let t = Instant::now();
        for c in ["cpu","cpuacct","memory","pids","freezer"] {
            let p = iso.task_parents()[c].join(format!("x{i}"));
            std::fs::create_dir(&p).unwrap();
        }
        for c in ["cpu","cpuacct","memory","pids","freezer"] {
            let p = iso.task_parents()[c].join(format!("x{i}"));
            std::fs::remove_dir(&p).unwrap();
        }
        t_c += t.elapsed();
    }
    println!("mkdir+rmdir 5 cgroups avg {:?}", t_c / 60);
    iso.remove_task_parents().unwrap();
}
