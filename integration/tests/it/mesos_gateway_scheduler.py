"""A pymesos 0.3.15 scheduler, unchanged Mesos client code, run against `corral mesos-gateway`
by mesos_gateway.rs. Usage: python mesos_gateway_scheduler.py HOST:PORT

1. Declines the first offer with a one-hour filter and checks no offer comes back within 7 s
   (Corral's default filter is 5 s), then revives and gets an offer again.
2. Launches 5 shell tasks that print and exit 0, one that exits 7, and one long task.
3. Acknowledges every update explicitly (implicit acknowledgements off).
4. Once the 5 finished (and the failing one failed), kills the long task and waits for
   TASK_KILLED, then stops (TEARDOWN).
Prints one line `RESULT {json}` at the end and exits 0 only if everything was seen.
"""

import json
import logging
import sys
import threading
import time

from pymesos import MesosSchedulerDriver, Scheduler

logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                    format="%(asctime)s %(name)s %(levelname)s %(message)s")
log = logging.getLogger("it-scheduler")

N = 5
SHORT = ["short-%d" % i for i in range(N)]
FAILING = "fails-7"
LONG = "long"


def scalar(offer, name):
    return sum(r["scalar"]["value"] for r in offer["resources"]
               if r["name"] == name and r.get("type", "SCALAR") == "SCALAR")


class ItScheduler(Scheduler):
    def __init__(self):
        self.lock = threading.Lock()
        self.done = threading.Event()
        self.framework_id = None
        self.phase = "decline"          # decline -> wait-filter -> launch -> running
        self.declined_at = None
        self.offers_during_filter = 0
        self.offers = 0
        self.launched = False
        self.updates = {}               # task -> [state, ...]
        self.messages = {}              # task -> last message
        self.acked = 0
        self.errors = []
        self.killed_sent = False

    def registered(self, driver, framework_id, master_info):
        log.info("registered as %s (master %s)", framework_id["value"], master_info)
        self.framework_id = framework_id["value"]

    def error(self, driver, message):
        log.error("ERROR event: %s", message)
        self.errors.append(message)

    def resourceOffers(self, driver, offers):
        with self.lock:
            for offer in offers:
                self.offers += 1
                log.info("offer %s from %s: cpus %s mem %s", offer["id"]["value"],
                         offer["hostname"], scalar(offer, "cpus"), scalar(offer, "mem"))
                if self.phase == "decline":
                    self.phase = "wait-filter"
                    self.declined_at = time.time()
                    driver.declineOffer(offer["id"], filters={"refuse_seconds": 3600})
                    threading.Thread(target=self.revive_later, args=(driver,), daemon=True).start()
                elif self.phase == "wait-filter":
                    self.offers_during_filter += 1
                    driver.declineOffer(offer["id"], filters={"refuse_seconds": 3600})
                elif self.phase == "launch" and not self.launched and scalar(offer, "cpus") >= 0.7:
                    self.launched = True
                    self.phase = "running"
                    driver.launchTasks(offer["id"], self.tasks(offer), filters={"refuse_seconds": 3600})
                else:
                    driver.declineOffer(offer["id"], filters={"refuse_seconds": 3600})

    def revive_later(self, driver):
        time.sleep(7)
        with self.lock:
            self.phase = "launch"
        log.info("reviving offers")
        driver.reviveOffers()

    def tasks(self, offer):
        def task(tid, command):
            return {
                "name": tid,
                "task_id": {"value": tid},
                "agent_id": offer["agent_id"],
                "resources": [
                    {"name": "cpus", "type": "SCALAR", "scalar": {"value": 0.1}},
                    {"name": "mem", "type": "SCALAR", "scalar": {"value": 32}},
                ],
                "command": command,
            }
        out = [task(t, {"value": "echo hello from $MESOS_TASK_ID", "shell": True}) for t in SHORT]
        out.append(task(FAILING, {"shell": False, "value": "/bin/sh",
                                  "arguments": ["sh", "-c", "exit $CODE"],
                                  "environment": {"variables": [{"name": "CODE", "value": "7"}]}}))
        out.append(task(LONG, {"value": "exec sleep 600"}))
        return out

    def statusUpdate(self, driver, update):
        tid = update["task_id"]["value"]
        state = update["state"]
        log.info("update %s %s %s", tid, state, update.get("message", ""))
        with self.lock:
            self.updates.setdefault(tid, []).append(state)
            if "message" in update:
                self.messages[tid] = update["message"]
            if "uuid" in update:
                self.acked += 1
        # Explicit acknowledgement (needs status.agent_id and the base64 uuid).
        driver.acknowledgeStatusUpdate(update)
        with self.lock:
            finished = all("TASK_FINISHED" in self.updates.get(t, []) for t in SHORT)
            failed = "TASK_FAILED" in self.updates.get(FAILING, [])
            running = "TASK_RUNNING" in self.updates.get(LONG, [])
            if finished and failed and running and not self.killed_sent:
                self.killed_sent = True
                log.info("killing %s", LONG)
                driver.killTask({"value": LONG})
            if "TASK_KILLED" in self.updates.get(LONG, []):
                self.done.set()


def main():
    master = sys.argv[1]
    sched = ItScheduler()
    framework = {"user": "nobody", "name": "pymesos-it", "hostname": "localhost"}
    driver = MesosSchedulerDriver(sched, framework, master, use_addict=False,
                                  implicit_acknowledgements=False)
    driver.start()
    ok = sched.done.wait(150)
    driver.stop()  # TEARDOWN
    driver.join()
    with sched.lock:
        result = {
            "ok": ok,
            "framework_id": sched.framework_id,
            "offers_during_filter": sched.offers_during_filter,
            "updates": sched.updates,
            "messages": sched.messages,
            "acked": sched.acked,
            "errors": sched.errors,
            "version": driver.version,
        }
    print("RESULT " + json.dumps(result), flush=True)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
