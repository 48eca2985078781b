use super::*;
use proto::{AgentId, FrameworkId, StatusSource};

fn offer(id: &str, cpus_milli: u64) -> Offer {
    Offer {
        id: OfferId::new(id),
        framework_id: FrameworkId::new("f"),
        agent_id: AgentId::new(format!("a-{id}")),
        hostname: "h".into(),
        resources: Resources::new(cpus_milli, 1 << 30),
        attributes: Default::default(),
        role: "*".into(),
        pressure: None,
        reserved: false,
    }
}

fn shape() -> TaskShape {
    TaskShape {
        resources: Resources::new(100, 1 << 20),
        run_ms: Some((5, 5)),
    }
}

fn status(task: &TaskId, state: TaskState) -> TaskStatus {
    TaskStatus::new(task.clone(), state, StatusSource::Agent)
}

#[test]
fn submitted_launches_wait_for_an_offer_and_time_from_the_wish() {
    let t0 = Instant::now();
    let mut book = LaunchBook::new("t", shape(), Demand::Submitted { hold_offers: true });
    book.submit(t0);
    book.submit(t0);
    assert!(book.plan(t0).accepts.is_empty(), "no offer yet");
    book.on_offers(vec![offer("o1", 150)], t0 + Duration::from_millis(10));
    let plan = book.plan(t0 + Duration::from_millis(10));
    // One task fits the offer; the second launch waits for another one.
    assert_eq!(plan.accepts.len(), 1);
    let task = plan.accepts[0].1[0].clone();
    assert_eq!(
        task.labels.get(TASK_MS_LABEL).map(String::as_str),
        Some("5")
    );
    assert_eq!(book.outstanding(), 2);
    book.on_status(
        &status(&task.task_id, TaskState::Running),
        t0 + Duration::from_millis(30),
    );
    book.on_status(
        &status(&task.task_id, TaskState::Finished),
        t0 + Duration::from_millis(40),
    );
    assert_eq!(book.latencies.summary().max, Duration::from_millis(30));
    assert_eq!((book.counts.running, book.counts.finished), (1, 1));
    assert_eq!(book.outstanding(), 1);
}

#[test]
fn a_launch_is_timed_by_stage_where_the_framework_sees_it() {
    let t0 = Instant::now();
    let ms = Duration::from_millis;
    let mut book = LaunchBook::new("t", shape(), Demand::Submitted { hold_offers: true });
    book.submit(t0);
    book.on_offers(vec![offer("o1", 150)], t0 + ms(10));
    let plan = book.plan(t0 + ms(12));
    let task = plan.accepts[0].1[0].task_id.clone();
    book.on_status(&status(&task, TaskState::Starting), t0 + ms(40));
    book.on_status(&status(&task, TaskState::Running), t0 + ms(100));
    let p50 = |l: &Latencies| l.summary().p50;
    assert_eq!(p50(&book.stages.to_accept), ms(12));
    assert_eq!(p50(&book.stages.to_starting), ms(28));
    assert_eq!(p50(&book.stages.to_running), ms(60));
    assert_eq!(p50(&book.latencies), ms(100), "the stages add up");
    let (first, rest) = book.stages.split_at(1);
    assert_eq!(first.to_running.count(), 1);
    assert_eq!(rest.to_running.count(), 0);
}

#[test]
fn per_offer_demand_fills_each_offer_and_declines_what_fits_nothing() {
    let t0 = Instant::now();
    let mut book = LaunchBook::new("t", shape(), Demand::PerOffer(3));
    book.on_offers(vec![offer("big", 1000), offer("small", 50)], t0);
    let plan = book.plan(t0);
    assert_eq!(plan.accepts.len(), 1);
    assert_eq!(plan.accepts[0].1.len(), 3);
    assert_eq!(plan.declines, vec![OfferId::new("small")]);
    let lost = plan.accepts[0].1[0].task_id.clone();
    book.on_status(&status(&lost, TaskState::Lost), t0);
    assert_eq!(book.counts.failed, 1);
    assert_eq!(book.counts.sent, 3);
}

#[test]
fn a_rescinded_offer_is_not_used() {
    let t0 = Instant::now();
    let mut book = LaunchBook::new("t", shape(), Demand::Submitted { hold_offers: true });
    book.on_offers(vec![offer("o1", 1000)], t0);
    book.on_rescind(&OfferId::new("o1"));
    book.submit(t0);
    assert!(book.plan(t0).accepts.is_empty());
}

#[test]
fn the_pacer_issues_launches_at_a_steady_rate() {
    let t0 = Instant::now();
    let mut pacer = Pacer::new(t0, 20.0);
    assert_eq!(pacer.due(t0), vec![t0]);
    let due = pacer.due(t0 + Duration::from_millis(1000));
    assert_eq!(
        due.len(),
        20,
        "launches 2..=21 are due at 50 ms steps up to 1 s"
    );
    assert_eq!(due[0], t0 + Duration::from_millis(50));
    assert_eq!(due[19], t0 + Duration::from_millis(1000));
    assert!(pacer.due(t0 + Duration::from_millis(1010)).is_empty());
}

#[test]
fn a_framework_that_does_not_hold_offers_declines_them_when_idle() {
    let t0 = Instant::now();
    let mut book = LaunchBook::new("t", shape(), Demand::Submitted { hold_offers: false });
    book.on_offers(vec![offer("o1", 1000), offer("o2", 1000)], t0);
    book.submit(t0);
    let plan = book.plan(t0);
    // The newest offer is used (the oldest is the nearest to its timeout); the rest declined.
    assert_eq!(plan.accepts.len(), 1);
    assert_eq!(plan.accepts[0].0, OfferId::new("o2"));
    assert_eq!(plan.declines, vec![OfferId::new("o1")]);
}
