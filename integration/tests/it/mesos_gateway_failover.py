"""A pymesos 0.3.15 scheduler through a leader failover of Corral's masters, behind
`corral mesos-gateway` (run by mesos_gateway.rs). Usage: python mesos_gateway_failover.py HOST:PORT

It launches one long task and prints READY once the task runs (the test then kills the leading
master). pymesos sees its stream end (disconnected), re-subscribes with its framework id
(reregistered), and reconciles implicitly until answered (every 5 s, as Mesos advises: a
reconciliation sent while the masters change leader again may go unanswered): the running task
must be reported by the master (no uuid), once per reconciliation at most. It then kills the
task, waits for TASK_KILLED and stops (TEARDOWN).
Prints `RESULT {json}` and exits 0 only if all of that was seen.
"""

import json
import logging
import sys
import threading
import time

from pymesos import MesosSchedulerDriver, Scheduler

logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                    format="%(asctime)s %(name)s %(levelname)s %(message)s")
log = logging.getLogger("it-failover")
TASK = "survivor"


class FailoverScheduler(Scheduler):
    def __init__(self):
        self.lock = threading.Lock()
        self.done = threading.Event()
        self.framework_id = None
        self.launched = False
        self.ready = False
        self.disconnects = 0
        self.reregistrations = 0
        self.reconciled_running = 0
        self.reconciles_sent = 0
        self.reconcile_pending = False
        self.updates = []
        self.errors = []
        self.kill_sent = False

    def registered(self, driver, framework_id, master_info):
        self.framework_id = framework_id["value"]
        log.info("registered as %s", self.framework_id)

    def reregistered(self, driver, master_info):
        with self.lock:
            self.reregistrations += 1
            start = not self.reconcile_pending
            self.reconcile_pending = True
        log.info("re-registered; reconciling")
        if start:
            threading.Thread(target=self.reconcile_until_answered, args=(driver,),
                             daemon=True).start()

    def reconcile_until_answered(self, driver):
        while True:
            with self.lock:
                if not self.reconcile_pending:
                    return
                self.reconciles_sent += 1
            driver.reconcileTasks([])
            time.sleep(5)

    def disconnected(self, driver):
        with self.lock:
            self.disconnects += 1
        log.info("disconnected")

    def error(self, driver, message):
        log.error("ERROR event: %s", message)
        self.errors.append(message)

    def resourceOffers(self, driver, offers):
        for offer in offers:
            with self.lock:
                launch = not self.launched
                self.launched = True
            if launch:
                task = {
                    "name": TASK,
                    "task_id": {"value": TASK},
                    "agent_id": offer["agent_id"],
                    "resources": [
                        {"name": "cpus", "type": "SCALAR", "scalar": {"value": 0.1}},
                        {"name": "mem", "type": "SCALAR", "scalar": {"value": 32}},
                    ],
                    "command": {"value": "exec sleep 600"},
                }
                driver.launchTasks(offer["id"], [task], filters={"refuse_seconds": 3600})
            else:
                driver.declineOffer(offer["id"], filters={"refuse_seconds": 3600})

    def statusUpdate(self, driver, update):
        state = update["state"]
        has_uuid = "uuid" in update
        log.info("update %s %s uuid=%s reason=%s", update["task_id"]["value"], state,
                 has_uuid, update.get("reason"))
        driver.acknowledgeStatusUpdate(update)
        with self.lock:
            self.updates.append([state, has_uuid, update.get("reason"), self.reregistrations])
            if state == "TASK_RUNNING" and not self.ready:
                self.ready = True
                print("READY", flush=True)
            if (self.reregistrations > 0 and state == "TASK_RUNNING" and not has_uuid
                    and update.get("source") == "SOURCE_MASTER"):
                self.reconciled_running += 1
                self.reconcile_pending = False
                if not self.kill_sent:
                    self.kill_sent = True
                    threading.Thread(target=self.kill_later, args=(driver,), daemon=True).start()
            if state == "TASK_KILLED":
                self.done.set()

    def kill_later(self, driver):
        # Long enough for a duplicate report of the task to show up.
        time.sleep(3)
        log.info("killing %s", TASK)
        driver.killTask({"value": TASK})


def main():
    sched = FailoverScheduler()
    framework = {"user": "nobody", "name": "pymesos-failover", "hostname": "localhost",
                 "failover_timeout": 120}
    driver = MesosSchedulerDriver(sched, framework, sys.argv[1], use_addict=False,
                                  implicit_acknowledgements=False)
    driver.start()
    ok = sched.done.wait(150)
    driver.stop()
    driver.join()
    with sched.lock:
        result = {
            "ok": ok,
            "framework_id": sched.framework_id,
            "disconnects": sched.disconnects,
            "reregistrations": sched.reregistrations,
            "reconciled_running": sched.reconciled_running,
            "reconciles_sent": sched.reconciles_sent,
            "updates": sched.updates,
            "errors": sched.errors,
        }
    print("RESULT " + json.dumps(result), flush=True)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
