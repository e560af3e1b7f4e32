"""The report stage: `report.json`, `report.md` and the plots (`tfprune.report`).

It names no other stage: `report_stage(stages)` declares it for a run of `stages` (the
plots it may write are `report.PLOTS` and those of their parts, `Stage.report`), and it
renders each stage's part of the report from the run's own list.
"""

from tfprune.pipeline.stage import Stage


def report_stage(stages):
    """The report stage of a run whose stages before it are `stages`."""

    def files(config):
        from tfprune import report

        if not config.plots:
            return report.FILES
        own = (name for stage in stages if stage.report is not None and stage.applies(config)
               for name in stage.report.plot_files())
        return report.FILES + (*report.PLOTS, *own)

    return Stage("report", _report, always=True, writes=files)


def _report(context):
    from tfprune import report

    data = report.build(context.config, context.stages, context.results, context.records,
                        data=context.data.describe())
    outputs = report.write(context.folder, data, plots=context.config.plots,
                           stages=context.stages)
    return outputs, data, f"{report.headline(data)} -> {context.folder / 'report.md'}"
