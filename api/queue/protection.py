"""Scale-in protection for a worker on an EC2 Auto Scaling instance: protected while it holds jobs.

Scaling in on queue depth picks instances without asking what they run; KEDA users report busy pods
killed mid-job (kedacore/keda#3674). An instance protected from scale-in is never the one picked, so the
worker protects its instance when it takes jobs and lifts the protection once it has been idle for a
while (not after every batch: two API calls per batch would be throttled, and a busy queue would make
the instance flip between states). The autoscaling group needs `autoscaling:SetInstanceProtection` for
the instance role (deploy/cloudformation/workers.yaml grants it on the group alone).
"""
import logging
import time
import urllib.request

from api.settings import Settings

log = logging.getLogger("api.queue.protection")
IMDS = "http://169.254.169.254/latest"  # the instance's own metadata service (IMDSv2)


class ScaleInProtection:
    """`busy(True)` when the worker holds jobs, `busy(False)` when a pull came back empty. Calls fail
    soft: a worker that cannot change its protection keeps working (and says so in its log)."""

    def __init__(self, client, group: str, instance_id: str, idle_seconds: float = 60.0, clock=time.monotonic):
        self.client, self.group, self.instance_id = client, group, instance_id
        self.idle_seconds, self.clock = idle_seconds, clock
        self.protected = False
        self._last_busy = 0.0

    def busy(self, busy: bool) -> None:
        now = self.clock()
        if busy:
            self._last_busy = now
            if not self.protected:
                self._set(True)
        elif self.protected and now - self._last_busy > self.idle_seconds:
            self._set(False)

    def _set(self, protected: bool) -> None:
        try:
            self.client.set_instance_protection(InstanceIds=[self.instance_id], AutoScalingGroupName=self.group,
                                                ProtectedFromScaleIn=protected)
            self.protected = protected
        except Exception as exc:  # botocore's errors: log, keep serving jobs
            log.warning("could not set scale-in protection to %s: %s", protected, exc)


def instance_id(timeout: float = 2.0) -> str:
    """This instance's id from IMDSv2 (a session token first, as the launch template requires)."""
    token_request = urllib.request.Request(f"{IMDS}/api/token", method="PUT",
                                           headers={"X-aws-ec2-metadata-token-ttl-seconds": "60"})
    with urllib.request.urlopen(token_request, timeout=timeout) as answer:  # nosec B310: fixed IMDS address
        token = answer.read().decode()
    request = urllib.request.Request(f"{IMDS}/meta-data/instance-id", headers={"X-aws-ec2-metadata-token": token})
    with urllib.request.urlopen(request, timeout=timeout) as answer:  # nosec B310
        return answer.read().decode()


def protection_for(settings: Settings) -> ScaleInProtection | None:
    """Protection for this instance when SERVE_QUEUE_AUTOSCALING_GROUP names its group; else None."""
    if not settings.queue_autoscaling_group:
        return None
    import boto3
    return ScaleInProtection(boto3.client("autoscaling"), settings.queue_autoscaling_group, instance_id(),
                             idle_seconds=max(60.0, 2 * settings.queue_poll_seconds))
