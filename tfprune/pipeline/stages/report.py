"""The report stage: `report.json`, `report.md` and the plots (`tfprune.report`)."""



from tfprune.pipeline.runner import Stage
from tfprune.pipeline.stages.search import SEARCH
from tfprune.pipeline.stages.tflm import TFLM


def _report_files(config):
    from tfprune import report

    memory = (report.MEMORY_PLOT,) if TFLM.applies(config) else ()
    searched = (report.SEARCH_PLOT,) if SEARCH.applies(config) else ()
    return report.FILES + ((*report.PLOTS, *memory, *searched) if config.plots else ())


def _report(context):
    from tfprune import report

    data = report.build(context.config, context.stages, context.results, context.records,
                        data=context.data.describe())
    outputs = report.write(context.folder, data, plots=context.config.plots)
    return outputs, data, f"{report.headline(data)} -> {context.folder / 'report.md'}"


REPORT = Stage("report", _report, always=True, writes=_report_files)
