"""Mutation check: deliberate bugs in the core, each of which the named tests must catch.

Each mutation is a small semantic change (a flipped sign, a skipped check, a logged secret)
applied to a temporary copy of the project; the tests that guard that behaviour run against the
copy (``PYTHONPATH`` puts it first) and must fail. The report lists caught and survived; the
exit status is 1 if any survived, or if a mutation no longer applies (the code it targets
changed: update the list with it).

    uv run python scripts/mutations.py [--only ID ...] [--list] [--fast] [--jobs N]

``--fast`` skips mutations whose guard is a slow test. ``--jobs`` runs that many mutations at
once, each in a copy of its own (the guarding tests start their servers on free ports and write
under their own temporary directories), each in a process forked from the runner after it has
imported the heavy third-party modules once (:data:`PRELOAD`; never this project's own, so the
mutated copy is what the tests import). CI runs the whole list (``scripts/bootstrap.sh test``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Mutation:
    id: str
    what: str
    file: str
    old: str
    new: str
    tests: tuple[str, ...]
    slow: bool = False


M = Mutation
MUTATIONS: tuple[Mutation, ...] = (
    # -- secret handling ---------------------------------------------------------------------
    M("token-logged", "the Hub token written through logging", "mll_registry/hub/discovery.py",
      "        self._token = token\n",
      "        self._token = token\n        import logging\n"
      "        logging.getLogger('mll_registry').debug('hub token %s', token or os.environ.get("
      "'HF_TOKEN'))\n",
      ("tests/hub/test_secrets.py",), slow=True),
    # -- only the tool's own ensembles load (issue #40) ---------------------------------------
    M("trust-code-allowed", "a model version's MLmodel may ship code (code_paths)",
      "mll_registry/selection/ensemble_trust.py", '    if pf.get("code") is not None:\n',
      "    if False:\n",
      ("tests/security/test_hostile_versions.py::test_a_genuine_looking_folder_changed_in_one_place_is_refused[code_paths]",)),
    M("trust-python-model-allowed", "a model version's MLmodel may hold a pickled python_model",
      "mll_registry/selection/ensemble_trust.py",
      '    if "python_model" in pf or "artifacts" in pf:\n', "    if False:\n",
      ("tests/security/test_hostile_versions.py::test_a_genuine_looking_folder_changed_in_one_place_is_refused[python_model]",)),
    M("trust-listing-unchecked", "files off the allow-list pass the model check",
      "mll_registry/selection/ensemble_trust.py",
      "        bound = file_bound(rel, max_model_gb, where)\n",
      "        bound = 1 << 62\n",
      ("tests/security/test_hostile_versions.py::test_a_genuine_looking_folder_changed_in_one_place_is_refused[extra_file]",
       "tests/security/test_hostile_versions.py::test_a_genuine_looking_folder_changed_in_one_place_is_refused[pickle_file]")),
    M("trust-link-followed", "the model check follows links", "mll_registry/selection/ensemble_trust.py",
      "                st = e.stat(follow_symlinks=False)\n", "                st = e.stat()\n",
      ("tests/security/test_hostile_versions.py::test_a_genuine_looking_folder_changed_in_one_place_is_refused[symlink]",)),
    M("spec-prompt-braces", "a spec's prompt may hold format fields besides {}",
      "mll_registry/selection/ensemble.py", '        if t.count("{}") != 1 or t.replace("{}", "").count("{") or \\\n',
      "        if False and \\\n",
      ("tests/security/test_hostile_versions.py::test_a_genuine_looking_folder_changed_in_one_place_is_refused[prompt_format]",)),
    M("member-config-unchecked", "a member's config is not checked against its pin",
      "mll_registry/selection/ensemble.py", "    if got_cfg != m.config_sha256:\n", "    if False:\n",
      ("tests/security/test_hostile_versions.py::test_the_genuine_folder_predicts_from_bytes_and_checks_its_pins",)),
    M("promote-unchecked", "promote moves an alias to a version it never checked",
      "mll_registry/app/selection.py",
      '                fetch_verified(f"models:/{name}/{version}", Path(tmp) / "model",\n',
      '                (lambda *a: None)(f"models:/{name}/{version}", Path(tmp) / "model",\n',
      ("tests/security/test_hostile_versions.py::test_predict_and_promote_refuse_a_version_that_is_code[loader_module]",)),
    M("served-path-opened", "a served model opens a path its client names",
      "mll_registry/selection/ensemble.py",
      "    if isinstance(item, str):\n        if max_bytes is not None",
      "    if isinstance(item, str) and os.path.exists(item):\n"
      "        return io.BytesIO(Path(item).read_bytes())\n"
      "    if isinstance(item, str):\n        if max_bytes is not None",
      ("tests/security/test_hostile_versions.py::test_served_model_takes_no_paths_and_says_nothing_about_them",)),
    M("eps-decoded", "any format Pillow knows is decoded (EPS reaches Ghostscript)",
      "mll_registry/errors.py", "        im = Image.open(path, formats=IMAGE_FORMATS)",
      "        im = Image.open(path, formats=None)",
      ("tests/security/test_untrusted_files.py::test_eps_never_reaches_ghostscript_from_a_file_or_bytes",)),
    M("model-link-followed", "a model folder's links are followed (labelled, bundled)",
      "mll_registry/models/schemes.py", "            st = e.stat(follow_symlinks=False)\n",
      "            st = e.stat()\n",
      ("tests/security/test_untrusted_files.py::test_a_model_folder_with_a_link_or_special_file_is_refused",)),
    M("request-count-unbounded", "a served request may hold any number of images",
      "mll_registry/selection/ensemble.py", "        if lim is not None and len(images) > lim.images:\n",
      "        if False:\n",
      ("tests/selection/test_ensemble_model.py::test_each_request_bound_is_a_400_naming_it",), slow=True),
    M("body-unbounded", "mll serve reads a request body of any size", "mll_registry/selection/serving.py",
      "        self.limit = limit\n", "        self.limit = limit * 1000\n",
      ("tests/selection/test_ensemble_model.py::test_mll_serve_answers_like_the_in_process_ensemble",),
      slow=True),
    M("caller-project-copied", "a registered ensemble holds the caller's uv.lock and pyproject",
      "mll_registry/app/selection.py", "                uv_project_path=no_project,\n",
      "                uv_project_path=None,\n",
      ("tests/selection/test_ensemble_model.py::test_mll_serve_answers_like_the_in_process_ensemble",),
      slow=True),
    M("worker-ensembles-writable", "labelling workers keep writes to the ensembles' models",
      "deploy/mlflow-users.sh", "    grant(worker, deny)\n", "    grant(worker, {})\n",
      ("tests/security/test_security_servers.py::test_workers_write_labels_and_no_ensemble",),
      slow=True),
    M("ensemble-named-like-a-label", "an ensemble may take a label model's name (workers write it)",
      "mll_registry/app/selection.py",
      "        if name == GRAPH_MODEL or name.startswith(LABEL_MODEL_PREFIXES):\n",
      "        if False:\n",
      ("tests/security/test_hostile_versions.py::test_an_ensemble_cannot_take_a_label_models_name",)),
    # -- inference cost in the label (issue #41) ----------------------------------------------
    M("gflops-fastpath-uncounted", "the FLOP count keeps MHA's fused path (attention counted 0)",
      "mll_registry/models/cost.py", "    torch.backends.mha.set_fastpath_enabled(False)\n",
      "    pass\n",
      ("tests/labels/test_inference_cost.py::test_gflops_count_every_block_of_the_image_tower",)),
    M("cost-not-tagged", "a label's cost is not put on its registry version",
      "mll_registry/registry/labels.py", "                           **cost_tags(label.meta.get(\"cost\"))}.items():\n",
      "                           }.items():\n",
      ("tests/labels/test_inference_cost.py::test_a_label_carries_its_cost_to_the_registry_query_and_card",)),
    # -- atomic writes -----------------------------------------------------------------------
    M("atomic-path-in-place", "atomic_path writes straight into the target",
      "mll_registry/fsutil.py", "    tmp_path = Path(tmp)\n",
      "    tmp_path = target\n    os.unlink(tmp)\n",
      ("tests/kernel/test_damaged_state.py::test_atomic_writes_fsync_the_file_then_its_directory",)),
    M("atomic-dir-in-place", "atomic_dir fills the target directory in place",
      "mll_registry/fsutil.py",
      '                                dir=target.parent))\n    try:\n        yield tmp\n',
      "                                dir=target.parent))\n    shutil.rmtree(tmp)\n"
      "    target.mkdir(parents=True, exist_ok=True)\n    tmp = target\n    try:\n"
      "        yield tmp\n        return\n",
      ("tests/kernel/test_damaged_state.py::test_atomic_dir_keeps_the_old_content_when_writing_fails",)),
    M("atomic-dir-two-renames", "atomic_dir swaps an existing directory by two renames (#40, 7)",
      "mll_registry/fsutil.py", "        elif exchange(tmp, target):  # tmp now holds the old content\n",
      "        elif False:  # tmp now holds the old content\n",
      ("tests/kernel/test_damaged_state.py::test_a_writer_killed_inside_the_swap_leaves_the_old_or_the_new_directory[exchange]",
       "tests/kernel/test_damaged_state.py::test_a_migration_killed_inside_the_swap_loses_no_label_and_migrates_no_leftover[exchange]")),
    M("swap-leftover-not-restored", "a killed two-rename swap's old directory stays hidden (#40, 7)",
      "mll_registry/fsutil.py", "        os.rename(leftover, target)\n", "        pass\n",
      ("tests/kernel/test_damaged_state.py::test_a_writer_killed_inside_the_swap_leaves_the_old_or_the_new_directory[two-renames]",
       "tests/kernel/test_damaged_state.py::test_a_migration_killed_inside_the_swap_loses_no_label_and_migrates_no_leftover[two-renames]")),
    M("leftover-listed-as-label", "the local store lists and migrates a writer's hidden leftovers (#40, 7)",
      "mll_registry/labels/stores.py",
      "            if is_leftover(meta.parent.name) or is_leftover(meta.parent.parent.name):\n",
      "            if False:\n",
      ("tests/kernel/test_damaged_state.py::test_a_migration_killed_inside_the_swap_loses_no_label_and_migrates_no_leftover[exchange]",)),
    # -- selection ---------------------------------------------------------------------------
    M("select-version-check", "select() accepts labels of another graph version",
      "mll_registry/selection/select.py", "    if wrong:\n        raise SelectionError(",
      "    if False:\n        raise SelectionError(",
      ("tests/selection/test_selection.py::test_labels_for_another_graph_version_are_refused_by_name",)),
    M("margin-flipped", "the fall-back margin measured the wrong way round",
      "mll_registry/selection/select.py", "    margin = sb - st\n", "    margin = st - sb\n",
      ("tests/selection/test_reuse_rules.py",)),
    M("fallback-never", "the fall-back rule never triggers", "mll_registry/selection/select.py",
      "    fell = (differs & (margin <= z * se)) if z is not None else np.zeros(C, bool)\n",
      "    fell = np.zeros(C, bool)\n", ("tests/selection/test_reuse_rules.py",)),
    M("other-sense-any-node", "another sense of the name counts whatever node matches best",
      "mll_registry/selection/matching.py", "    if by_any_sense and by_any_sense == top1:\n",
      "    if by_any_sense:\n",
      ("tests/selection/test_class_senses.py::test_match_kind_is_one_rule",)),
    M("other-sense-ignored", "a name resolving under another sense is flagged as before",
      "mll_registry/selection/matching.py", '        return "other_sense"\n',
      '        pass\n',
      ("tests/selection/test_class_senses.py::test_a_name_whose_chosen_sense_is_absent_matches_its_other_sense_when_that_is_the_top_node",)),
    M("calibration-ignored-in-reuse", "reuse takes every model at its own scale",
      "mll_registry/selection/reuse.py",
      "    probs = [cache.get(ref, load, scale_of(ref)) for ref in used]\n",
      "    probs = [cache.get(ref, load) for ref in used]\n",
      ("tests/labels/test_calibration.py::test_evaluate_reuses_each_model_at_the_selections_scale",)),
    M("calibration-partial", "a selection mixes calibrated and uncalibrated models",
      "mll_registry/selection/select.py", "    if missing:\n        import logging\n",
      "    if False:\n        import logging\n",
      ("tests/labels/test_calibration.py::test_selection_takes_the_labels_scales_or_none_at_all",)),
    M("calibration-wrong-target", "the scale is fitted against the wrong node",
      "mll_registry/labels/calibration.py",
      "    return fit_logit_scale(X @ T.T, col[own[idx]])\n",
      "    return fit_logit_scale(X @ T.T, np.zeros(len(idx), np.int64))\n",
      ("tests/labels/test_calibration.py",)),
    M("ensemble-own-scale", "the deployed ensemble takes its members at their own scales",
      "mll_registry/selection/ensemble.py",
      "            probs.append(probabilities(cos.astype(np.float64), member.logit_scale))\n",
      "            probs.append(probabilities(cos.astype(np.float64), 100.0))\n",
      ("tests/selection/test_ensemble_model.py::test_the_saved_ensemble_loads_with_pyfunc_and_predicts_what_reuse_computes",),
      slow=True),
    M("ensemble-weights-unchecked", "a deployed ensemble loads members whatever their weights",
      "mll_registry/selection/ensemble.py",
      "    if got != m.weights_sha256:\n",
      "    if False:\n",
      ("tests/selection/test_ensemble_model.py::test_members_are_pinned_by_the_sha256_of_their_weights",)),
    M("hub-content-weights-blob", "the Hub's content id takes the weights' git blob, not the config's",
      "mll_registry/models/refs.py",
      "    return content_id(str(weights.lfs.sha256), str(config.blob_id))\n",
      "    return content_id(str(weights.lfs.sha256), str(weights.blob_id))\n",
      ("tests/hub/test_discovery.py::test_the_hub_and_local_files_give_one_content_id",)),
    M("label-upload-not-retried", "a reset connection during the label upload fails the labelling",
      "mll_registry/registry/labels.py",
      "                self.call(functools.partial(self.client.log_artifacts, rid, str(stored),\n"
      "                                            \"label\"), \"upload label\")\n",
      "                self.client.log_artifacts(rid, str(stored), \"label\")\n",
      ("tests/registry/test_registry.py::test_a_connection_reset_during_the_label_upload_is_retried[embedded]",),
      slow=True),
    M("attainable-in-sample", "the attainable per-class reference chooses on the task's own images",
      "mll_registry/evaluation/bench.py",
      "    chosen = B.oracle_per_class(ev.reference.per_class_f1)\n",
      "    chosen = B.oracle_per_class(ev.per_class_f1)\n",
      ("tests/evaluation/test_baselines.py::test_attainable_references_choose_on_the_reference_set_not_on_the_task",)),
    M("ensemble-drops-routing", "the deployed ensemble votes per class whatever its reuse mode",
      "mll_registry/selection/ensemble.py",
      "        routing = None if self.spec.routing is None else np.asarray(self.spec.routing)\n",
      "        routing = None\n",
      ("tests/selection/test_ensemble_model.py::test_the_saved_ensemble_loads_with_pyfunc_and_predicts_what_reuse_computes",),
      slow=True),
    M("promote-any-challenger", "a challenger takes the alias whatever it measures",
      "mll_registry/app/selection.py",
      '            decision = ("won" if scores[str(version)] > scores[champion] + margin else "lost")\n',
      '            decision = "won"\n',
      ("tests/selection/test_ensemble_model.py::test_the_alias_moves_only_to_a_challenger_that_wins",),
      slow=True),
    M("pooled-drops-a-model", "the pooled ensemble leaves one selected model out",
      "mll_registry/selection/reuse.py", "        W[used] = 1.0\n", "        W[used[1:]] = 1.0\n",
      ("tests/selection/test_reuse_rules.py",)),
    M("soft-unsquared", "soft routing weighs by r/max r, not its square",
      "mll_registry/selection/reuse.py", ") ** 2\n", ") ** 1\n",
      ("tests/selection/test_reuse_rules.py",)),
    M("pseudo-source-not-held-out", "pseudo-task selection counts include the task's own source",
      "mll_registry/evaluation/tuning.py",
      "        held_out = (source != t.source).astype(np.float64)\n",
      "        held_out = np.ones(len(source))\n",
      ("tests/evaluation/test_baselines.py::test_pseudo_evidence_holds_the_tasks_source_out_and_scores_from_the_embeddings",)),
    M("bootstrap-unpaired", "the bootstrap resamples the two methods' images independently",
      "mll_registry/evaluation/intervals.py", "            total += counts @ dc\n",
      "            total += counts @ dc + rng.permutation(counts, axis=1) @ "
      "np.asarray(b, np.float64)[y == c] - counts @ np.asarray(b, np.float64)[y == c]\n",
      ("tests/evaluation/test_intervals.py",)),
    M("f1-eps", "the eps in the F1 denominator removed", "mll_registry/selection/select.py",
      "        return 2 * tp / (2 * tp + fp + p[None, :] + eps)",
      "        return 2 * tp / (2 * tp + fp + p[None, :])", ("tests/selection/test_selection.py",)),
    M("rank0-only", "restricted argmax looks at each image's top-1 only",
      "mll_registry/selection/select.py", "    if len(miss):\n        T = idx[miss]", "    if False:\n        T = idx[miss]",
      ("tests/selection/test_selection.py",)),
    M("fp-counts-members", "predicting a node an image belongs to counts as a false positive",
      "mll_registry/selection/select.py",
      "    wrong = ~is_member & (pred >= 0)",
      "    wrong = pred >= 0", ("tests/selection/test_selection.py",)),
    M("alpha-swapped", "the reuse metric weighs the mean, not the class score, by alpha",
      "mll_registry/selection/select.py",
      "    return alpha * scores + (1 - alpha) * scores.mean(axis=1, keepdims=True)",
      "    return (1 - alpha) * scores + alpha * scores.mean(axis=1, keepdims=True)",
      ("tests/selection/test_selection.py",)),
    M("top-models-ascending", "the worst models are chosen", "mll_registry/selection/select.py",
      '    return np.argsort(-r, axis=0, kind="stable")[:k].T',
      '    return np.argsort(r, axis=0, kind="stable")[:k].T', ("tests/selection/test_selection.py",)),
    M("blocks-drop-last", "block-wise counting skips the last block of models",
      "mll_registry/selection/select.py", "    for i in range(0, len(labels), block):",
      "    for i in range(0, max(len(labels) - block, 1), block):",
      ("tests/selection/test_selection.py::test_blockwise_counts_equal_the_whole_and_the_hand_counts",)),
    M("damaged-index-unbounded", "an out-of-range node index (damaged label) crashes selection",
      "mll_registry/selection/select.py", 'pred = lookup.take(idx[:, 0], mode="clip")',
      "pred = lookup.take(idx[:, 0])",
      ("tests/selection/test_selection.py::test_memory_mapped_labels_select_exactly_as_loaded_ones",)),
    # -- matching ----------------------------------------------------------------------------
    M("senses-ignore-task", "a class's WordNet senses are taken in WordNet's order, whatever the "
      "task's other classes and domain", "mll_registry/selection/matching.py",
      "        order = sorted(range(len(ss)), key=lambda i: -score[i])  # stable: ties in WordNet order",
      "        order = list(range(len(ss)))",
      ("tests/selection/test_class_senses.py",)),
    # -- reuse -------------------------------------------------------------------------------
    M("entropy-weight-flipped", "confident models weigh less in the ensemble",
      "mll_registry/selection/reuse.py", "        return 1.0 / (H + eps)", "        return H + eps",
      ("tests/selection/test_matching_reuse.py",)),
    # -- labelling ---------------------------------------------------------------------------
    M("acc5-off-by-one", "accuracy@5 counts the 4 best nodes", "mll_registry/labels/labeller.py",
      "    k5 = min(5, n_nodes) - 1", "    k5 = min(5, n_nodes) - 2",
      ("tests/labels/test_labeling.py::test_label_matches_direct_computation",
       "tests/labels/test_labeling.py::test_per_node_accuracy_at_1_and_5_over_many_ranks")),
    M("member-score-column", "member scores read from the wrong node column",
      "mll_registry/labels/labeller.py",
      "        member[rows] = S[li, torch.from_numpy(m_node[rows]).to(device)].cpu().numpy()",
      "        member[rows] = S[li, 0].cpu().numpy()",
      ("tests/labels/test_labeling.py::test_label_matches_direct_computation",)),
    M("normalise-sign", "the pixel normalisation subtracts the mean twice",
      "mll_registry/models/image_stream.py", "        return 1.0 / (std * 255.0), -mean / std",
      "        return 1.0 / (std * 255.0), -2 * mean / std",
      ("tests/labels/test_labeling.py::test_label_matches_direct_computation",)),
    M("checkpoint-trusted", "any chunk checkpoint file is used, whole or not",
      "mll_registry/labels/labeller.py", "    if not f.is_file():\n        return False\n",
      "    return f.is_file()\n",
      ("tests/kernel/test_damaged_state.py::test_truncated_checkpoint_is_recomputed_not_read",)),
    M("cache-published-early", "the raw-pixel cache is published before it is complete",
      "mll_registry/labels/labeller.py",
      "        writer = cache.writer(shape) if cache.fits(shape) else None",
      "        writer = cache.writer(shape) if cache.fits(shape) else None\n"
      "        if writer is not None:\n            cache.publish()\n"
      "            writer = cache.writer(shape)",
      ("tests/labels/test_labeling.py::test_a_crash_while_building_the_pixel_cache_leaves_no_cache",)),
    M("pass-one-model", "every model of a multi-model pass is encoded by the pass's first model",
      "mll_registry/labels/labeller.py",
      "        consumers.append(_Consumer(lm, j.pipe.normaliser(lm.device), set(todo), ckpt))\n",
      "        consumers.append(_Consumer(jobs[0].lm, j.pipe.normaliser(lm.device), set(todo), "
      "ckpt))\n",
      ("tests/labels/test_multi_model.py::test_one_pass_decodes_each_image_once_and_labels_as_runs"
       "_of_their_own",)),
    M("source-hits1-from-top5", "per-source top-1 hits count the top-5 hits",
      "mll_registry/labels/labeller.py", '"hits1": top1,', '"hits1": top5,',
      ("tests/labels/test_labeling.py::test_per_source_counts_equal_a_hand_count_and_pool_to_the_node"
       "_figures",)),
    M("source-query-first-source", "a per-source query reads the first source's counts",
      "mll_registry/registry/label_index.py", "        k = self.sources.index(source)\n",
      "        k = 0\n",
      ("tests/registry/test_label_index.py::test_a_per_source_query_ranks_on_that_sources_images_only",)),
    # -- registry idempotency ----------------------------------------------------------------
    M("no-precheck", "label() relabels before finding the stored label",
      "mll_registry/app/labelling.py",
      "        if st is not None and not force:\n            old = st.find(key, str(res.ref))",
      "        if False:\n            old = st.find(key, str(res.ref))",
      ("tests/registry/test_registry.py::test_label_run_version_tags_alias",), slow=True),
    # -- label files and graph bundles -------------------------------------------------------
    M("label-shape-unchecked", "a label for another number of images is accepted",
      "mll_registry/labels/format.py",
      '                raise LabelError(f"label has {got} {what}, graph has {want}; relabel the '
      'model")', "                pass",
      ("tests/kernel/test_damaged_state.py::test_label_for_another_graph_size_is_refused",)),
    M("checksum-unchecked", "a label whose bytes changed is loaded", "mll_registry/labels/format.py",
      "        bad = checksum_mismatch(path, meta)\n        if bad:",
      "        bad = checksum_mismatch(path, meta)\n        if False:",
      ("tests/kernel/test_damaged_state.py::test_scribbled_label_is_refused_by_its_checksum",)),
    M("mapped-truncation-unchecked", "a truncated label file is memory-mapped anyway",
      "mll_registry/labels/format.py",
      "        if hi > data_bytes or hi - lo != nbytes:",
      "        if hi - lo != nbytes:",
      ("tests/selection/test_selection.py::test_mapped_label_refuses_truncated_files_and_wrong_shapes",)),
    M("version-ignores-captions", "the graph version does not cover node captions",
      "mll_registry/graph/bundle.py", 'h.update("".join(f"N\\t{n}\\t{lem}\\t{c}\\n" for',
      'h.update("".join(f"N\\t{n}\\t{lem}\\n" for',
      ("tests/graph/test_graph.py::test_bundle_roundtrip_and_tamper_detection",)),
    M("version-ignores-lemmas", "a node's lemma (the default label text) is not in the version",
      "mll_registry/graph/bundle.py", 'h.update("".join(f"N\\t{n}\\t{lem}\\t{c}\\n" for',
      'h.update("".join(f"N\\t{n}\\t{c}\\n" for',
      ("tests/graph/test_graph.py::test_everything_a_label_depends_on_is_in_the_version",)),
    M("stamp-ignores-changes", "a verified-bundle stamp survives a rewrite of the files",
      "mll_registry/graph/bundle.py", "        stats = [(f, st.st_size, st.st_mtime_ns, st.st_ino) for f in",
      "        stats = [(f, 0, 0, 0) for f in",
      ("tests/graph/test_graph.py::test_a_verified_bundle_is_not_hashed_again_until_its_files_change",)),
    M("warm-select-starts-mlflow", "selection asks MLflow for labels the caches already hold",
      "mll_registry/registry/store.py",
      "        if selection_ready(dest):\n            return dest\n",
      "        return self.registry.download_label(v)\n",
      ("tests/cli/test_e2e_cli.py::test_warm_queries_and_selection_load_neither_mlflow_nor_wordnet_nor"
       "_the_text_model",), slow=True),
    M("chunk-checksum-unchecked", "a label chunk fetched from the artifact store is not checked",
      "mll_registry/registry/labels.py", "                if sha256_file(got) != sha:\n",
      "                if False:\n",
      ("tests/registry/test_label_chunks.py::test_a_damaged_chunk_in_the_artifact_store_is_refused"
       "_and_kept_out",), slow=True),
    M("selection-downloads-whole-label", "a selection on a fresh worker downloads whole labels",
      "mll_registry/registry/labels.py",
      "            if meta.get(\"format\") != FORMAT:  # mll-label/1: one file, downloaded whole\n",
      "            if True:\n",
      ("tests/registry/test_label_chunks.py::test_a_fresh_worker_fetches_only_the_chunks_it_reads",),
      slow=True),
    M("fp-by-difference-wrong", "false positives taken as predictions plus TP",
      "mll_registry/selection/select.py", "        FP = n_pred - TP\n", "        FP = n_pred + TP\n",
      ("tests/selection/test_selection.py::test_false_positives_by_difference_equal_the_direct_count",)),
    M("chunk-rows-misplaced", "rows of a ranks chunk read at the first chunk's offsets",
      "mll_registry/labels/format.py", "                                base + (first[r] - c * per) * rb)",
      "                                base + first[r] * rb - c * 0)",
      ("tests/selection/test_selection.py::test_memory_mapped_labels_select_exactly_as_loaded_ones",)),
    # -- untrusted input ---------------------------------------------------------------------
    M("config-unknown-keys", "unknown model-config keys are ignored instead of refused",
      "mll_registry/models/config.py",
      "        if check is None:\n            raise UnsafeModelError(",
      "        if check is None:\n            continue\n            raise UnsafeModelError(",
      ("tests/models/test_security.py",), slow=True),
    M("pickle-without-opt-in", "pickled weights load without --allow-pickle",
      "mll_registry/models/refs.py", "        if allow_pickle:\n            return pickled[0]",
      "        if True:\n            return pickled[0]",
      ("tests/labels/test_labeling.py::test_pickled_weights_refused_unless_opted_in",)),
    M("pixel-limit-raised", "decompression bombs are decoded", "mll_registry/errors.py",
      "MAX_IMAGE_PIXELS = 64 * 1024 * 1024", "MAX_IMAGE_PIXELS = 64 * 1024 * 1024 * 1024",
      ("tests/kernel/test_damaged_state.py::test_bad_task_images_are_named_not_tracebacks",)),
    M("non-string-classes", "task classes that are not strings are accepted as text",
      "mll_registry/task.py", "    if not isinstance(value, str) or not value.strip():",
      "    if not str(value).strip():", ("tests/selection/test_matching_reuse.py",)),
    M("label-hash-ignores-templates", "two template sets share a label key",
      "mll_registry/settings.py", '    return {"templates": list(templates),',
      '    return {"templates": [],',
      ("tests/kernel/test_architecture.py::test_label_hash_depends_only_on_label_content",)),
    M("retry-budget-ignored", "a down server is retried past the time budget",
      "mll_registry/retries.py",
      "stop=stop_after_attempt(tries) | stop_after_delay(limit)",
      "stop=stop_after_attempt(tries)",
      ("tests/kernel/test_architecture.py::test_retries_stop_at_the_try_count_or_the_time_budget",)),
    # -- published graphs and discovery (production) ---------------------------------------
    M("graph-shard-unchecked", "a fetched shard is used without checking its sha256",
      "mll_registry/registry/graph_store.py", "    if sha256_file(shard) != sha256:\n",
      "    if False:\n",
      ("tests/registry/test_graph_store.py::test_a_damaged_shard_in_the_store_is_refused_and_nothing_is_cached",)),
    M("graph-image-unchecked", "publishing packs an image that changed since the build",
      "mll_registry/registry/graph_store.py",
      "        if hashlib.blake2b(data, digest_size=16).hexdigest() != digest:\n"
      "            raise GraphError(f\"sample image {paths[row]} changed",
      "        if False:\n            raise GraphError(f\"sample image {paths[row]} changed",
      ("tests/registry/test_graph_store.py::test_a_changed_image_is_refused_at_publish",)),
    M("default-graph-is-demo", "a missing default graph falls back to the demo graph",
      "mll_registry/app/graphs.py",
      "        if spec in GRAPHS:\n            return GRAPHS.get(spec)(root=root)",
      '        if spec in GRAPHS or spec == "default":\n'
      '            return GRAPHS.get("demo" if spec == "default" else spec)(root=root)',
      ("tests/registry/test_graph_store.py::test_no_default_graph_is_a_clear_error",)),
    M("watermark-stuck", "a recorded page does not move the watermark",
      "mll_registry/registry/discovery_state.py", "            self.watermark = newest.isoformat()\n",
      "            pass\n",
      ("tests/hub/test_discovery.py::test_discovery_state_moves_the_watermark_and_keeps_failures_for_retry",)),
    M("failures-forgotten", "a model that failed to label is not kept for retry",
      "mll_registry/registry/discovery_state.py", "            if ref in errors:\n",
      "            if False:\n",
      ("tests/hub/test_discovery.py::test_discovery_state_moves_the_watermark_and_keeps_failures_for_retry",)),
    # -- graph growth ------------------------------------------------------------------------
    M("incremental-wrong-rows", "an incremental label takes the neighbouring stored image row",
      "mll_registry/labels/labeller.py", "            out[have] = reuse.image_emb[r[have]]\n",
      "            out[have] = reuse.image_emb[np.maximum(r[have] - 1, 0)]\n",
      ("tests/graph/test_graph_growth.py::test_an_incremental_label_equals_a_full_one_and_encodes_only_new_images",)),
    M("incremental-texts-by-position", "stored node-text embeddings reused by row, not by prompt",
      "mll_registry/labels/labeller.py", "    txt16[ti >= 0] = reuse.text_emb[ti[ti >= 0]]\n",
      "    txt16[ti >= 0] = reuse.text_emb[np.flatnonzero(ti >= 0) % len(reuse.text_emb)]\n",
      ("tests/graph/test_graph_growth.py::test_an_incremental_label_equals_a_full_one_and_encodes_only_new_images",)),
    M("embeddings-digest-unchecked", "a damaged embeddings file is reused",
      "mll_registry/labels/embeddings.py",
      "        if verify and _digest(arrays[k] for k in _ORDER) != meta.get(\"digest\"):\n",
      "        if False:\n",
      ("tests/graph/test_graph_growth.py::test_damaged_or_foreign_embeddings_are_not_reused",)),
    M("child-reorders-parent-members", "a child puts new images before a parent node's own",
      "mll_registry/graph/build.py",
      "        picked = list(parent.members.get(n, [])) + [(k, True) for k in own_new.get(n, [])]\n",
      "        picked = [(k, True) for k in own_new.get(n, [])] + list(parent.members.get(n, []))\n",
      ("tests/graph/test_graph_growth.py::test_a_child_keeps_the_parent_and_records_the_delta",)),
    M("diff-images-by-path", "the graph diff counts images by path, not content",
      "mll_registry/graph/lineage.py",
      '    da, db = set(a.images["digest"]), set(b.images["digest"])\n',
      '    da, db = set(a.images["relpath"]), set(b.images["relpath"])\n',
      ("tests/graph/test_graph_growth.py::test_a_child_keeps_the_parent_and_records_the_delta",)),
    M("embeddings-always-kept", "keep_embeddings=false still keeps them beside the label",
      "mll_registry/labels/labeller.py",
      "        if run.embeddings is not None and keep_embeddings:\n",
      "        if run.embeddings is not None:\n",
      ("tests/graph/test_graph_growth.py::test_without_kept_embeddings_a_grown_graph_is_labelled_in_full",)),
    M("tracking-uri-unset", "registering a version unsets MLFLOW_TRACKING_URI for the process",
      "mll_registry/registry/tracking.py", "            if env is not None:\n",
      "            if False:\n",
      ("tests/graph/test_graph_growth.py::test_registry_child_versions_record_their_lineage_and_reuse_from_any_worker",)),
    # -- baselines ---------------------------------------------------------------------------
    M("oracle-per-class-recall", "the per-class oracle scores classes by recall, not F1",
      "mll_registry/evaluation/baselines.py", "    den = predicted + support  # 2TP + FP + FN\n",
      "    den = 2 * support + 0 * predicted  # 2TP + FP + FN\n",
      ("tests/evaluation/test_baselines.py::test_per_class_f1_oracle_picks_best_f1_not_best_recall",)),
    M("modelgpt-paper-uncentred", "ModelGPT (paper) fits raw accuracy, not per-task-centred",
      "mll_registry/evaluation/baselines.py", "        Xc, yc = centre(X, groups), centre(y, groups)\n",
      "        Xc, yc = X, y\n",
      ("tests/evaluation/test_baselines.py::test_centred_regression_recovers_a_linear_relation_despite_task_offsets",)),
    M("pseudo-task-all-nodes", "pseudo-task ground truth classifies among every graph node",
      "mll_registry/evaluation/baselines.py",
      "        txt = np.asarray(embeddings.text_emb[t_rows[[pos[n] for n in t.nodes]]], np.float32)\n",
      "        txt = np.asarray(embeddings.text_emb[t_rows], np.float32)\n",
      ("tests/evaluation/test_baselines.py::test_pseudo_task_ground_truth_is_zero_shot_top1_from_the_label_embeddings",)),
    M("pseudo-task-any-source", "a pseudo-task takes its classes' own images from every source",
      "mll_registry/evaluation/baselines.py", "        rows = own[src == source]\n", "        rows = own\n",
      ("tests/evaluation/test_baselines.py::test_pseudo_tasks_are_seeded_draws_of_one_sources_folder_nodes",)),
    # -- domain-aware selection and the demo's sources ----------------------------------------
    M("source-weight-sign", "source weights favour the least similar description",
      "mll_registry/selection/source_weights.py", "    z = np.asarray(similarity, np.float64) / temperature\n",
      "    z = -np.asarray(similarity, np.float64) / temperature\n",
      ("tests/selection/test_source_weights.py::test_domain_weights_are_the_softmax_of_text_similarity",)),
    M("source-weight-fp-unweighted", "false positives are counted unweighted",
      "mll_registry/selection/select.py",
      "    FP = np.bincount(fp_m * V + pred[wrong], minlength=M * V, weights=None if img_weight is None\n",
      "    FP = np.bincount(fp_m * V + pred[wrong], minlength=M * V, weights=None if True\n",
      ("tests/selection/test_source_weights.py::test_weighted_counts_equal_per_source_counts_combined_by_hand",)),
    M("source-weight-domain-always", "a task that names no domain is weighted by 'photo'",
      "mll_registry/selection/select.py",
      "    given = getattr(task, \"domain_given\", True)\n", "    given = True\n",
      ("tests/selection/test_source_weights.py::test_a_task_without_a_domain_gets_uniform_weights",)),
    M("train-on-graph-views", "training views use the graph's augmentation seeds",
      "mll_registry/demo/train.py", '    return f"train:{style}:{codepoint:X}:{view}"\n',
      '    return f"{style}:{codepoint:X}:{view + 1}"\n',
      ("tests/demo/test_demo_data.py::test_graph_images_share_no_bytes_and_no_render_with_training_or_task_images",)),
    # -- security: what the registry serves is untrusted (published graphs, tags) -------------
    M("registry-run-id-any-path", "a label version's run id becomes a cache path whatever its shape",
      "mll_registry/registry/labels.py",
      "    if not isinstance(run_id, str) or not RUN_ID.fullmatch(run_id):\n",
      "    if False:\n",
      ("tests/security/test_security_registry_input.py::test_a_label_versions_run_id_that_is_a_path_deletes_no_directory",)),
    M("registry-path-under-open", "path_under lets a name leave its root (absolute, .., a link)",
      "mll_registry/fsutil.py",
      "    if real == real_base or not real.is_relative_to(real_base):\n",
      "    if False:\n",
      ("tests/security/test_security_registry_input.py::test_path_under_refuses_every_way_out_of_the_root",)),
    M("registry-version-tag-unchecked", "a graph version's mll.graph_version tag used unchecked",
      "mll_registry/registry/graph_store.py",
      '        graph_version=shaped("mll.graph_version", t.get("mll.graph_version", ""), _VERSION),\n',
      '        graph_version=t.get("mll.graph_version", ""),\n',
      ("tests/security/test_security_registry_input.py::test_a_graph_version_tag_that_is_a_path_deletes_no_directory",)),
    M("registry-shard-name-any-path", "an index.json shard name may carry a directory",
      "mll_registry/registry/graph_store.py",
      '_SHARD = re.compile(r"([0-9a-f]{64})\\.tar")',
      '_SHARD = re.compile(r"(?:.*/)?([0-9a-f]{64})\\.tar")',
      ("tests/security/test_security_registry_input.py::test_a_shard_name_that_is_a_path_deletes_no_directory",)),
    M("registry-tar-member-unbounded", "a shard member's declared size is not bounded",
      "mll_registry/registry/graph_store.py", "                if m.size > MAX_IMAGE_BYTES:\n",
      "                if False:\n",
      ("tests/security/test_security_registry_input.py::test_a_shard_member_declaring_more_than_an_image_may_have_is_refused",)),
    M("registry-sparse-member-unchecked", "a sparse shard member is not recognised as sparse",
      "mll_registry/registry/graph_store.py",
      "    if m.sparse is not None or m.type == tarfile.GNUTYPE_SPARSE:\n",
      "    if False:\n",
      ("tests/security/test_security_registry_input.py::test_a_sparse_shard_member_is_refused_without_reading_its_declared_size",)),
    M("registry-two-rows-one-file", "two image rows may name one file (an image swapped in)",
      "mll_registry/registry/graph_store.py", "        if path in seen:\n", "        if False:\n",
      ("tests/security/test_security_registry_input.py::test_two_image_rows_pointed_at_one_file_are_refused",)),
    M("registry-bad-tag-crashes-list", "one malformed registry version breaks `mll graph list`",
      "mll_registry/registry/graph_store.py",
      "            except ValueError as exc:\n                log.warning(",
      "            except KeyError as exc:\n                log.warning(",
      ("tests/security/test_security_registry_input.py::test_a_non_integer_tag_is_skipped_by_list_and_valid_versions_stay_listed",)),
    M("sample-non-regular-read", "a sample image that is a FIFO is read like a file",
      "mll_registry/fsutil.py", "        if not stat.S_ISREG(st.st_mode):\n", "        if False:\n",
      ("tests/security/test_security_registry_input.py::test_a_fifo_in_a_sample_folder_is_refused_without_hanging",)),
    M("graph-spec-folder-first", "`--graph default` loads a ./default folder when there is one",
      "mll_registry/app/graphs.py", "        if is_graph_version(spec):\n",
      "        if is_graph_version(spec) and not Path(spec).exists():\n",
      ("tests/security/test_security_registry_input.py::test_graph_default_is_the_registrys_default_even_with_a_default_folder_here",)),
    # -- security: settings that direct a secret, credentials in error lines ------------------
    M("settings-project-trusted", "a project config sets caption_url/provider, trusted or not",
      "mll_registry/settings.py",
      "        if path != user and (USER_ONLY | {TRUSTED_DIRS}) & set(table):\n",
      "        if False:\n",
      ("tests/security/test_security_settings.py::test_project_config_cannot_send_the_caption_key_elsewhere",)),
    M("caption-plain-http", "the caption key is sent over plain http to any host",
      "mll_registry/redaction.py",
      '    if scheme == "https" or (scheme == "http" and is_loopback(url)):\n',
      "    if True:\n",
      ("tests/security/test_security_settings.py::test_plain_http_to_another_host_is_refused_before_connecting",)),
    M("redact-userinfo-skipped", "URIs keep their user:password@ in error lines",
      "mll_registry/redaction.py", "    out = _URI.sub(_uri, out)\n", "",
      ("tests/security/test_security_settings.py::test_down_tracking_server_error_shows_no_credentials",
       "tests/security/test_security_settings.py::test_hub_error_shows_no_endpoint_credentials")),
    M("redact-query-skipped", "secret query parameters (?api_key=, ?token=) are shown",
      "mll_registry/redaction.py", "    out = _QUERY.sub(lambda m: m.group(1) + MASK, out)\n", "",
      ("tests/security/test_security_settings.py::test_caption_endpoint_failures_are_one_line",)),
    M("caption-malformed-traceback", "a caption answer that is not JSON escapes as a traceback",
      "mll_registry/selection/matching.py", "        except (ValueError, LookupError, TypeError) as exc:\n",
      "        except TypeError as exc:\n",
      ("tests/security/test_security_settings.py::test_caption_endpoint_failures_are_one_line",)),
    M("hub-key-userinfo", "the discovery state key is built from the endpoint's credentials",
      "mll_registry/hub/discovery.py",
      '        host = re.sub(r"[^A-Za-z0-9_.-]+", "_", shown.split("://")[-1]).strip("_")\n',
      '        host = re.sub(r"[^A-Za-z0-9_.-]+", "_", self.endpoint.split("://")[-1]).strip("_")\n',
      ("tests/security/test_security_settings.py::test_hub_source_shows_no_endpoint_credentials",)),
    # -- security: untrusted text at the terminal and in cards --------------------------------
    M("terminal-markup-unescaped", "data in a styled CLI line is read as Rich markup",
      "mll_registry/terminal.py", "    return escape(controls(text))\n",
      "    return controls(text)\n",
      ("tests/security/test_security_output.py::test_error_lines_keep_brackets",
       "tests/security/test_security_output.py::test_hostile_class_names_print_as_text")),
    M("terminal-controls-raw", "control characters (ESC, OSC, BEL) reach the terminal raw",
      "mll_registry/terminal.py", "    return _CONTROL.sub(_visible, str(text))\n",
      "    return str(text)\n",
      ("tests/security/test_security_output.py::test_hostile_model_folder_prints_as_text",
       "tests/security/test_security_output.py::test_escape_sequences_never_reach_a_terminal")),
    M("terminal-console-markup-on", "the CLI's consoles parse markup in every printed string",
      "mll_registry/terminal.py", '        kwargs.setdefault("markup", False)\n',
      '        kwargs.setdefault("markup", True)\n',
      ("tests/security/test_security_output.py::test_hostile_model_folder_prints_as_text",)),
    M("card-html-unescaped", "a concept id's HTML goes into the card's table as it is",
      "mll_registry/hub/cards.py",
      "    return html.escape(one_line, quote=True).translate(_MD_SPECIAL)\n",
      "    return one_line.translate(_MD_SPECIAL)\n",
      ("tests/security/test_security_output.py::test_hostile_concept_id_cannot_break_or_grow_the_card",)),
    M("card-yaml-aliases", "YAML aliases in a card's front matter are expanded (billion laughs)",
      "mll_registry/hub/cards.py", "            if isinstance(event, yaml.AliasEvent):\n",
      "            if isinstance(event, yaml.AliasEvent) and False:\n",
      ("tests/security/test_security_output.py::test_yaml_alias_bomb_is_refused_within_a_second",)),
    M("card-front-matter-unbounded", "a front matter of any size is parsed",
      "mll_registry/hub/cards.py", "    if size > MAX_FRONT_MATTER_BYTES:\n",
      "    if size > MAX_FRONT_MATTER_BYTES * 1000:\n",
      ("tests/security/test_security_output.py::test_oversized_front_matter_is_refused_in_one_line",)),
    M("card-top-key-backtracking", "top-level keys found by the old backtracking pattern",
      "mll_registry/hub/cards.py",
      '    left to right once (a backtracking pattern is quadratic in a long line of spaces)."""\n',
      '    left to right once (a backtracking pattern is quadratic in a long line of spaces)."""\n'
      '    return bool(re.match(r"""^(?:"[^"]*"|\'[^\']*\'|[^\\s#\'"\\-?:][^:#]*?|-[^\\s:][^:#]*?)'
      '\\s*:(?:\\s|$)""", line))\n',
      ("tests/security/test_security_output.py::test_long_line_of_spaces_is_linear",)),
    # -- security: authenticated servers -------------------------------------------------------
    M("mlflow-without-auth", "mlflow-server.sh starts MLflow without its basic-auth app",
      "deploy/mlflow-server.sh", "args=(server --app-name basic-auth --serve-artifacts\n",
      "args=(server --serve-artifacts\n",
      ("tests/security/test_security_servers.py::test_mlflow_refuses_writes_without_credentials",), slow=True),
    M("prefect-without-auth", "prefect-server.sh drops the server's auth string",
      "deploy/prefect-server.sh",
      "export PREFECT_API_DATABASE_CONNECTION_URL PREFECT_SERVER_API_AUTH_STRING PREFECT_SERVER_API_HOST \\\n",
      "unset PREFECT_SERVER_API_AUTH_STRING\n"
      "export PREFECT_API_DATABASE_CONNECTION_URL PREFECT_SERVER_API_HOST \\\n",
      ("tests/security/test_security_servers.py::test_prefect_refuses_clients_without_the_auth_string",), slow=True),
    M("backend-uri-on-argv", "the backend store URI (with its password) on mlflow's command line",
      "deploy/mlflow-server.sh", "args=(server --app-name basic-auth --serve-artifacts\n",
      'args=(server --app-name basic-auth --serve-artifacts --backend-store-uri '
      '"$MLFLOW_BACKEND_STORE_URI"\n',
      ("tests/security/test_security_servers.py::test_no_secret_on_a_command_line_or_in_worker_and_flow_logs",), slow=True),
    M("request-timeout-unbounded", "one MLflow request may outlast the retry budget",
      "mll_registry/registry/tracking.py",
      "        bound_request_timeout()  # and one request no longer than the whole budget\n", "",
      ("tests/registry/test_request_budget.py::test_a_held_request_ends_within_the_retry_budget",
       "tests/security/test_security_servers.py::test_cli_unauthenticated_then_postgres_down_within_the_retry_budget"),
      slow=True),
    M("unauthenticated-swallowed", "a 401 from MLflow read as 'nothing there'",
      "mll_registry/registry/tracking.py", '    if re.search(r"error code 401\\b", str(exc)):\n',
      "    if False:\n",
      ("tests/security/test_security_servers.py::test_cli_unauthenticated_then_postgres_down_within_the_retry_budget",),
      slow=True),
    # -- security: what the registry and the deployment take (issue #40: 10, 11, 13) ------------
    M("deploy-url-token-kept", "prefect-deploy.sh refuses only user:password@, not TOKEN@",
      "deploy/prefect-deploy.sh", '  [[ "$url" == *@* ]] || return 0\n',
      '  [[ "$url" == *://*:*@* ]] || return 0\n',
      ("tests/production/test_production_stack.py::test_prefect_deploy_refuses_a_code_url_carrying_any_credential[token-only]",)),
    M("deploy-url-query-kept", "prefect-deploy.sh stores a code URL with ?private_token=",
      "deploy/prefect-deploy.sh", "  case \"$url\" in *'?'* | *'#'*) echo",
      "  case \"$url\" in *'#'*) echo",
      ("tests/production/test_production_stack.py::test_prefect_deploy_refuses_a_code_url_carrying_any_credential[private_token]",)),
    M("ensemble-pins-unchecked", "one malformed mll.pins tag fails the ensembles' listing",
      "mll_registry/app/selection.py",
      "                pins = pins_of(tags)\n            except ValueError as exc:\n",
      "                pins = pins_of(tags)\n            except KeyError as exc:\n",
      ("tests/selection/test_ensemble_listing.py::test_a_malformed_pins_tag_is_skipped_with_one_warning_and_the_rest_are_checked[not-json]",
       "tests/selection/test_ensemble_listing.py::test_stale_marking_after_a_label_registration_survives_a_malformed_version")),
    M("ensemble-name-unquoted", "an ensemble's name pasted into a filter string between quotes",
      "mll_registry/app/selection.py", "f\"name LIKE '{pattern}'\"", "f\"name = '{name}'\"",
      ("tests/selection/test_ensemble_listing.py::test_ensembles_whose_names_hold_quotes_are_listed",)),
    M("moved-data-dir-unchecked", "a copied data dir's store reads and writes the original's artifacts",
      "mll_registry/registry/tracking.py", "                    check_store_home(db.parent)\n",
      "                    pass\n",
      ("tests/registry/test_moved_data_dir.py::test_a_copied_or_moved_data_dir_is_refused_then_relocated_and_the_original_is_untouched[copied]",)),
    # -- security: one-line errors on bad input ------------------------------------------------
    M("label-overlap-unchecked", "a label header whose arrays overlap in the file is mapped",
      "mll_registry/labels/format.py", "        if start < end:\n", "        if False:\n",
      ("tests/security/test_security_inputs.py::test_crafted_label_headers_give_one_line_label_errors_on_the_selection_path[arrays-overlap]",)),
    M("label-negative-offsets", "a label array may start before the data (in the header)",
      "mll_registry/labels/format.py",
      "all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value)",
      "all(isinstance(v, int) and not isinstance(v, bool) for v in value)",
      ("tests/security/test_security_inputs.py::test_crafted_label_headers_give_one_line_label_errors_on_the_selection_path[offset-into-the-header]",)),
    M("label-size-wraps", "a label array's size is computed in int64 (huge shapes wrap or overflow)",
      "mll_registry/labels/format.py",
      "        nbytes = math.prod(shape) * np.dtype(dtype).itemsize",
      "        nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize",
      ("tests/security/test_security_inputs.py::test_crafted_label_headers_give_one_line_label_errors_on_the_selection_path[shape-wraps-to-zero]", "tests/security/test_security_inputs.py::test_crafted_label_headers_give_one_line_label_errors_on_the_selection_path[shape-overflows-int64]")),
    M("label-layout-unbounded", "a label layout's counts are not bounded (10^11 images) (#40, 6)",
      "mll_registry/labels/format.py", "        if lay[k] > most:\n", "        if False:\n",
      ("tests/security/test_label_layout_bounds.py::test_an_unbounded_layout_is_refused_fast_under_a_memory_cap",
       "tests/security/test_label_layout_bounds.py::test_every_layout_field_is_bounded")),
    M("label-headers-unchecked", "a full label read loads arrays its layout does not describe (#40, 6)",
      "mll_registry/labels/format.py", "            _check_arrays(path, meta, tensors)\n",
      "            pass\n",
      ("tests/security/test_label_layout_bounds.py::test_headers_that_disagree_with_the_layout_are_refused_before_any_array_is_read",)),
    M("weights-size-unbounded", "local-dir weights over max_model_gb are hashed anyway",
      "mll_registry/models/refs.py", "    if st.st_size > max_gb * 1e9:\n", "    if False:\n",
      ("tests/security/test_security_inputs.py::test_weights_over_max_model_gb_are_refused_before_hashing",)),
    M("weights-digest-uncached", "every listing rehashes unchanged local-dir weights",
      "mll_registry/models/refs.py", '                return str(entry["sha256"])\n',
      "                pass\n",
      ("tests/security/test_security_inputs.py::test_unchanged_weights_are_hashed_once_across_listings_and_changed_ones_again",)),
    M("weights-digest-ignores-ctime", "a rewrite that restores size and mtime keeps the old digest",
      "mll_registry/models/refs.py", "st.st_mtime_ns, st.st_ctime_ns]", "st.st_mtime_ns]",
      ("tests/security/test_security_inputs.py::test_unchanged_weights_are_hashed_once_across_listings_and_changed_ones_again",)),
    M("hub-id-as-typed", "a Hub id keeps the case it was typed in (two names for one model)",
      "mll_registry/hub/scheme.py", 'ModelRef("hf-hub", repo_id, ref.revision)',
      'ModelRef("hf-hub", ref.name, ref.revision)',
      ("tests/security/test_security_inputs.py::test_hub_ids_differing_in_case_are_one_registered_model",), slow=True),
    M("labeled-alias-unchecked", "the aliases are set once from a possibly stale read",
      "mll_registry/registry/labels.py",
      "                self.client.set_registered_model_alias(name, alias, version)\n",
      "                self.client.set_registered_model_alias(name, alias, version)\n"
      "            return\n",
      ("tests/security/test_security_inputs.py::test_labeled_stays_on_the_default_settings_version_under_a_forced_race",), slow=True),
)


def apply(copy: Path, m: Mutation) -> str:
    f = copy / m.file
    text = f.read_text(encoding="utf-8")
    n = text.count(m.old)
    if n != 1:
        raise SystemExit(f"mutation {m.id}: the target text occurs {n} times in {m.file} (needs "
                         "exactly 1): the code changed; update scripts/mutations.py")
    f.write_text(text.replace(m.old, m.new), encoding="utf-8")
    return text


def _copy_project(tmp: Path) -> None:
    """The project's code, tests and data the tests read, copied to ``tmp`` (the demo hub linked)."""
    for d in ("mll_registry", "flows", "tests", "model_cards", "deploy"):
        shutil.copytree(ROOT / d, tmp / d, ignore=shutil.ignore_patterns("__pycache__"))
    for f in ("pyproject.toml", "prefect.yaml"):
        shutil.copy2(ROOT / f, tmp / f)
    (tmp / "demo_hub").symlink_to(ROOT / "demo_hub")


#: third-party modules imported once by the runner, so each mutation's test process (forked
#: from it) starts with them; never a module of this project (the mutated copy is imported fresh)
PRELOAD = ("numpy", "PIL.Image", "pandas", "pyarrow", "yaml", "safetensors", "torch", "open_clip",
           "sentence_transformers", "mlflow", "nltk.corpus", "typer", "rich", "pytest")


def _preload() -> None:
    """Import :data:`PRELOAD` with the tests' offline environment (conftest sets the same)."""
    import contextlib
    import importlib

    for k, v in {"HF_HUB_OFFLINE": "1", "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true",
                 "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}.items():
        os.environ.setdefault(k, v)
    for name in PRELOAD:  # a module that cannot load is simply not preloaded
        with contextlib.suppress(Exception):
            importlib.import_module(name)
    assert not [n for n in sys.modules if n.split(".")[0] in ("mll_registry", "flows", "conftest")]


def _child(copy: Path, m: Mutation, log: Path) -> None:
    """In the forked child: run ``m``'s guarding tests on ``copy`` and exit with pytest's code."""
    code = 3
    try:
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115 - the child's whole life
        sys.stderr = sys.stdout
        os.chdir(copy)
        # the copy first, for this process and the processes its tests start
        os.environ.update(PYTHONPATH=str(copy), PYTHONDONTWRITEBYTECODE="1")
        sys.path.insert(0, str(copy))
        sys.dont_write_bytecode = True
        import pytest

        code = int(pytest.main(["-x", "-q", "-p", "no:cacheprovider", "-m", "slow or not slow",
                                *m.tests]))
        sys.stdout.flush()
    finally:
        os._exit(code)


def _status(code: int) -> str:
    # exit 1: tests failed (caught); 0: all passed (survived); else: could not run
    return {0: "SURVIVED", 1: "caught"}.get(code, f"ERROR rc={code}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="*", default=None)
    ap.add_argument("--list", action="store_true")
    ap.add_argument("--fast", action="store_true", help="skip mutations guarded by slow tests")
    ap.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1),
                    help="mutations run at once, each in its own copy (default: 2, or 1 on one core)")
    args = ap.parse_args()
    chosen = [m for m in MUTATIONS if (args.only is None or m.id in args.only)
              and not (args.fast and m.slow)]
    if args.list:
        for m in chosen:
            print(f"{m.id:32} {m.what}  [{', '.join(m.tests)}]")
        return 0
    for m in chosen:  # every target is checked before anything runs: a stale list fails at once
        if (ROOT / m.file).read_text(encoding="utf-8").count(m.old) != 1:
            apply(ROOT, m)  # raises SystemExit naming the mutation
    _preload()
    # the slow ones (server stacks) first, so the jobs end together
    todo = sorted(chosen, key=lambda m: not m.slow)
    free = [Path(tempfile.mkdtemp(prefix="mll-mutations-")) for _ in range(max(1, args.jobs))]
    tmps = list(free)
    for copy in free:
        _copy_project(copy)
    running: dict[int, tuple[Mutation, Path, str, float]] = {}
    results: list[tuple[Mutation, str]] = []
    try:
        while todo or running:
            while todo and free:  # one process per mutation, forked from this single thread
                m, copy = todo.pop(0), free.pop()
                original = apply(copy, m)
                t0 = time.perf_counter()
                pid = os.fork()
                if pid == 0:
                    _child(copy, m, copy / "mutation.log")
                running[pid] = (m, copy, original, t0)
            pid, wait = os.wait()
            m, copy, original, t0 = running.pop(pid)
            (copy / m.file).write_text(original, encoding="utf-8")
            status = _status(os.waitstatus_to_exitcode(wait))
            results.append((m, status))
            print(f"{status:9} {m.id:32} {time.perf_counter() - t0:6.1f} s  {m.what}", flush=True)
            if status.startswith("ERROR"):
                print((copy / "mutation.log").read_text(errors="replace")[-3000:], flush=True)
            free.append(copy)
    finally:
        for t in tmps:
            shutil.rmtree(t, ignore_errors=True)
    caught = sum(s == "caught" for _, s in results)
    print(f"\n{caught}/{len(chosen)} mutations caught")
    return 0 if caught == len(chosen) == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
