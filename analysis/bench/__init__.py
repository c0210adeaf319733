"""``nnqs bench``: the performance suite that scores a machine, and its regression check.

The benchmarks are declared in :data:`analysis.bench.cases.CASES` (a name, what it
measures, its metrics with unit and direction, and the parameters of its sizes: ``quick``
for tests, ``full`` for real runs here, ``gpu`` for one modern GPU); each names the
``measure_*`` function that runs it, imported only when the case runs: those of
``analysis/bench/measures.py``, which reuse the timing code of ``kernels.py``,
``training.py`` and ``entanglement.py`` here, or those of ``analysis/bench/scale.py`` and
``analysis/bench/parallel.py``:

* ``kernel_gram``: entries/s of the infinite-width NTK Gram matrix (ours, fresh and into
  a reused buffer), and of neural-tangents' ``jit(kernel_fn)`` when its environment
  (``.venv-nt``) exists;
* ``training``: member-steps/s and GFLOP/s of :func:`suite.training.train_ensemble`;
* ``renyi2_chunked``: entries/s of the route (b) Renyi-2 traces (:mod:`suite.replica`);
* ``zarr_io``: write and read bandwidth (GB/s) of a chunked float64 Zarr array;
* ``device_scaling``, ``process_scaling``, ``slurm_scaling``: strong scaling of training
  over 1, 2, 4 devices (fake CPU devices, or the real GPUs) and of a small sweep over 1
  and 2 local processes or concurrent SLURM array tasks; ``weak_scaling``: training with
  the members proportional to the devices. Each reports its throughput per worker count,
  the speed-up and the parallel efficiency (speed-up / workers);
* ``training_scale``: member-steps/s, GFLOP/s and fraction of peak FLOP/s at M >= 4096
  members, float32 and float64;
* ``gram_full_basis``: the NTK Gram over a whole spin basis (65,536^2 at full size) in
  tiles: entries/s, GB/s and fraction of peak memory bandwidth;
* ``time_to_solution``: a named spec (``paper-tfim`` at full size) from nothing to
  aggregated results, seconds (projected past a deadline).

A run (:func:`analysis.bench.run.run_bench`) gives a *record* (JSON): ``schema``, ``size``,
``system`` (host, CPU model, cores, memory, accelerators, package versions and git
commit, SLURM job: :mod:`analysis.bench.system`), ``cases`` (the parameters, seconds and
metric declarations of each case run), ``results`` (``{case: {metric: value}}``),
``notes``, ``errors`` (a case that raised, as one line), ``load_average`` and
``seconds``. :func:`analysis.bench.records.compare` scores it ReFrame-style against the
references of its system (``analysis/references/<system>.json``: per ``case.metric`` a
value, a tolerance ``[lower, upper]`` as fractions of it, ``null`` for unbounded, and a
unit) and against the most recent earlier record of the same system and size (in
``runs/bench/``): per metric ``ok``, ``regression``, ``improvement`` or ``no-reference``,
printed as a table (:func:`analysis.bench.report.metrics_table`). Records of any two
systems compare metric by metric (:func:`analysis.bench.report.compare_records`), and
the scaling cases of a record make efficiency tables and a figure
(:func:`analysis.bench.report.write_scaling_report`). The command line is
:mod:`analysis.bench.cli`:

    nnqs bench                          # all cases, full size: runs/bench/<system>-<n>.json
    nnqs bench --quick --cases zarr_io training --format table
    nnqs bench --executor slurm --profile local   # as one SLURM job (submitit)
    nnqs bench compare A.json B.json [--json]     # B against A, per metric
    nnqs bench report RECORD.json [--out DIR]     # scaling tables (Markdown) and figure
"""
