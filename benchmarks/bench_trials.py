"""How many trials each study needs: from the studies a `dvc repro` ran (the Optuna storage of params.yaml, or
--storage), the best value after each trial, the trial that found the final best, the smallest `n_trials` that
gives the same best parameters, and the time the study's trials took up to it and in all.

    python -m benchmarks.bench_trials                     # the studies of the current code (params.yaml: tune.storage)
    python -m benchmarks.bench_trials --storage sqlite:///old.db --all   # every study in another storage

With one worker a study's trials are the same sequence whatever `n_trials` is (the sampler is seeded and each trial
depends only on the ones before it), so a study of `n` trials is the first `n` trials of a longer one: cutting
`n_trials` to just past the best trial gives the same best parameters, the same trained model and the same metrics,
in less time. Whether more trials would have found better is what the rest of the history says (the best value
after each trial is printed).
"""

from __future__ import annotations

import argparse
import warnings

from biostream.core.config import load_yaml


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--storage", help="an Optuna storage URL (default: params.yaml tune.storage)")
    p.add_argument("--all", action="store_true", help="every study in the storage, not only the newest per detector")
    args = p.parse_args(argv)
    import optuna
    from optuna.trial import TrialState

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=FutureWarning)
    storage = args.storage or load_yaml(args.params)["tune"]["storage"]
    summaries = sorted(optuna.get_all_study_summaries(storage), key=lambda s: s.datetime_start or 0)
    if not args.all:  # the newest study of each detector (study names are `<detector>-<hash of its setup>`)
        summaries = list({s.study_name.rsplit("-", 1)[0]: s for s in summaries}.values())
    if not summaries:
        raise SystemExit(f"no study in {storage}: run `dvc repro` first")
    print(f"storage {storage}")
    print(f"{'study':<24} {'trials':>6} {'best':>7} {'found at':>8} {'same best with':>14} "
          f"{'time to it':>10} {'time, all':>9}")
    for s in summaries:
        study = optuna.load_study(study_name=s.study_name, storage=storage)
        done = [t for t in study.get_trials(deepcopy=False) if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
        complete = [t for t in done if t.state == TrialState.COMPLETE]
        if not complete:
            print(f"{s.study_name:<24} {len(done):>6}  no complete trial")
            continue
        best = study.best_trial
        seconds = [(t.datetime_complete - t.datetime_start).total_seconds() for t in done]
        upto = sum(sec for t, sec in zip(done, seconds, strict=True) if t.number <= best.number)
        print(f"{s.study_name:<24} {len(done):>6} {best.value:>7.4f} {best.number:>8} {best.number + 1:>14} "
              f"{upto:>9.0f}s {sum(seconds):>8.0f}s")
        running, history = float("-inf"), []
        for t in done:
            if t.state == TrialState.COMPLETE and t.value > running:
                running = t.value
                history.append(f"{t.number}:{running:.4f}")
        print(f"{'':<24} best so far after trial: {', '.join(history)}")


if __name__ == "__main__":
    main()
