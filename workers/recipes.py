"""The recipe contract: the hooks a recipe may hold, how they are called, and what they mean.

A recipe is an operator's folder of executables (``docs/recipes.md``): ``deploy``, ``upgrade``,
``resources`` (called with ``create``, ``verify`` or ``destroy``, as OpenStack Grenade does) and
``snapshot`` (the component's effective state as ``key value`` lines, see
:mod:`workers.snapshots`). This
module is the one place that knows the contract — the environment a hook gets, the per-component
state folder that lives from ``deploy`` through ``upgrade``, and how an exit status and the hook's
``ok NAME`` / ``not ok NAME`` lines become checks — so the runner's deploy step and the upgrade
suite speak it identically. Running the process (timeout, process group, capped output) is
:mod:`workers.testbed.hooks`' job.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from certifier.domain.results import Check
from workers.testbed.base import Testbed
from workers.testbed.hooks import HookResult, run_hook

Hook = Literal["deploy", "upgrade", "resources", "snapshot"]
Action = Literal["create", "verify", "destroy"]

EXIT_INFRA = 75  # EX_TEMPFAIL (sysexits.h): the testbed failed, not the candidate — retried
EXIT_SKIP = 77  # the automake "skipped" convention: nothing to do here, not a failure

# "ok data: 50 keys, checksum 3f2a…" / "not ok service: no answer on 198.18.0.11:8774"
RESULT_LINE = re.compile(r"^(ok|not ok)[ \t]+([A-Za-z0-9][A-Za-z0-9_.@/-]{0,62})"
                         r"(?:[ \t]*[:#][ \t]*(.*))?$")


@dataclass(frozen=True, slots=True)
class Deployable:
    """One component at one commit: what a hook is run for."""

    name: str
    sha: str
    checkout: Path
    recipe: Path | None
    run_in: str = "controller"

    def hook_path(self, hook: Hook) -> Path | None:
        """The executable for ``hook``, or None when the recipe does not have it."""
        if self.recipe is None:
            return None
        path = Path(self.recipe) / hook
        return path if path.exists() else None


@dataclass(frozen=True, slots=True)
class RunInfo:
    run_id: int
    kind: str
    candidate_id: int


@dataclass(frozen=True, slots=True)
class Outcome:
    """One hook invocation (one component, one host) as checks, or as an infra error."""

    label: str  # e.g. "upgrade api on h1", for the run log
    result: HookResult
    checks: tuple[Check, ...]
    infra_error: str | None = None

    @property
    def passed(self) -> bool:
        return self.infra_error is None and all(c.passed for c in self.checks)


@dataclass(frozen=True, slots=True)
class Reported:
    passed: bool
    name: str
    message: str


def reported_results(text: str) -> list[Reported]:
    """The ``ok NAME[: message]`` and ``not ok NAME[: message]`` lines a hook printed."""
    found = []
    for line in text.splitlines():
        match = RESULT_LINE.match(line.rstrip())
        if match:
            found.append(Reported(match.group(1) == "ok", match.group(2),
                                  (match.group(3) or "").strip()))
    return found


def to_checks(suite: str, name: str, done: HookResult, timeout: float,
              where: str = "") -> tuple[list[Check], str | None]:
    """Map a finished hook to checks, or to an infra error (exit 75).

    Exit 0 passes, exit 77 passes as "skipped", anything else fails with the last output lines
    as the message; a timeout fails. ``ok``/``not ok`` lines add one check each (``name/X``);
    when a ``not ok`` line already explains a non-zero exit, no extra check repeats it.
    """
    tail = done.output_tail.strip()
    whole = f"{name}{where}"
    if done.timed_out:
        return [Check(suite, whole, False, f"timed out after {timeout:g} s"
                      + (f"; last output: {tail}" if tail else ""))], None
    if done.exit_code == EXIT_INFRA:
        return [], f"{whole}: the hook reported a testbed problem (exit {EXIT_INFRA}): {tail}"
    lines = reported_results(done.log)
    checks = [Check(suite, f"{name}/{r.name}{where}", r.passed, r.message) for r in lines]
    if done.exit_code == 0:
        if not lines:
            checks.append(Check(suite, whole, True, ""))
    elif done.exit_code == EXIT_SKIP:
        if not lines:
            checks.append(Check(suite, whole, True, f"skipped: {tail}" if tail else "skipped"))
    elif not any(not r.passed for r in lines):
        checks.append(Check(suite, whole, False, f"exit {done.exit_code}: {tail}"))
    return checks, None


@dataclass
class Recipes:
    """Calls the hooks of a run's components on one testbed, with the contract's environment."""

    bed: Testbed
    run: RunInfo
    timeout: float
    log: Callable[[str], None]
    extra_env: dict[str, str] = field(default_factory=dict)

    def state_dir(self, component: str) -> Path:
        """The component's own folder; it lives as long as the testbed (deploy → upgrade).

        Under the state folder the testbed gives hooks, which for a remote driver may be a
        folder on the remote host (then the hook itself must ``mkdir -p`` it).
        """
        base = self.bed.hook_env().get("CERTIFIER_STATE_DIR") or str(self.bed.state_dir)
        return Path(base).absolute() / "components" / component

    def _prepare(self, component: str) -> None:
        folder = self.state_dir(component)
        if folder.is_relative_to(self.bed.state_dir.absolute()):  # on this machine: make it now
            folder.mkdir(parents=True, exist_ok=True)

    def env(self, comp: Deployable, hook: Hook, action: Action | None = None,
            previous: Deployable | None = None,
            extra: dict[str, str] | None = None) -> dict[str, str]:
        env = {
            **self.extra_env,
            **(extra or {}),
            "CERTIFIER_HOOK": hook,
            "CERTIFIER_COMPONENT": comp.name,
            "CERTIFIER_COMMIT": comp.sha,
            "CERTIFIER_CHECKOUT": str(comp.checkout.absolute()),
            "CERTIFIER_RECIPE_DIR": str(Path(comp.recipe).absolute()) if comp.recipe else "",
            "CERTIFIER_COMPONENT_STATE_DIR": str(self.state_dir(comp.name)),
            "CERTIFIER_RUN_ID": str(self.run.run_id),
            "CERTIFIER_RUN_KIND": self.run.kind,
            "CERTIFIER_CANDIDATE_ID": str(self.run.candidate_id),
        }
        if action is not None:
            env["CERTIFIER_ACTION"] = action
        if previous is not None:
            env["CERTIFIER_FROM_COMMIT"] = previous.sha
            env["CERTIFIER_FROM_CHECKOUT"] = str(previous.checkout.absolute())
        return env

    def call(self, comp: Deployable, hook: Hook, *, suite: str, check: str,
             action: Action | None = None, previous: Deployable | None = None,
             executable: Path | None = None,
             extra_env: dict[str, str] | None = None) -> list[Outcome]:
        """Run ``hook`` (or ``executable``) for ``comp`` on each of its targets.

        Returns one outcome per invocation; an empty list when the recipe has no such hook.
        Raises InfraError only when the hook cannot be started at all.
        """
        path = executable or comp.hook_path(hook)
        if path is None:
            return []
        self._prepare(comp.name)
        env = self.env(comp, hook, action, previous, extra_env)
        targets: list[str | None] = (
            [h.name for h in self.bed.hosts] if comp.run_in == "hosts" else [None])
        outcomes = []
        for host in targets:
            where = f" on {host}" if host else ""
            hook_env = {**env, "CERTIFIER_HOST": host} if host else env
            done = run_hook(self.bed, path, [action] if action else [], env=hook_env,
                            cwd=comp.checkout, timeout=self.timeout, host=host)
            label = f"{hook}{' ' + action if action else ''} {comp.name}{where}"
            self.log(f"{label} at {comp.sha[:12]}: exit {done.exit_code} in "
                     f"{done.duration_s:.1f} s" + (f"\n{done.log.rstrip()}" if done.log.strip()
                                                   else ""))
            checks, infra = to_checks(suite, check, done, self.timeout, where)
            outcomes.append(Outcome(label, done, tuple(checks), infra))
        return outcomes
