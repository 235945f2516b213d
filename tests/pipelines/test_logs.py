import logging

import pytest

from pipelines import logs


@pytest.fixture
def restore_logging():
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    echo = logging.getLogger(logs.ECHO_LOGGER)
    filters = echo.filters[:]
    yield
    root.handlers[:], echo.filters[:] = handlers, filters
    root.setLevel(level)


class _Collect(logging.Handler):
    def __init__(self):
        super().__init__()
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def test_the_job_service_echo_of_a_worker_line_is_dropped_once_configured(restore_logging):
    logs.configure(quiet=False)
    collect = _Collect()
    logging.getLogger().addHandler(collect)
    echo = logging.getLogger(logs.ECHO_LOGGER)
    echo.info("Worker: %s", 'severity: INFO message: "sampled sngan-rooms-c000000"')
    echo.info("job state changed to RUNNING")
    logging.getLogger("pipelines.sample_generators").info("sampled sngan-rooms-c000000")
    assert collect.messages == ["job state changed to RUNNING", "sampled sngan-rooms-c000000"]
    logs.configure(quiet=False)
    assert len(echo.filters) == len(set(map(type, echo.filters)))  # configured twice, one filter


def test_workers_get_the_drivers_level_unless_the_user_set_one():
    assert logs.worker_options(["--runner", "DirectRunner"], logging.WARNING) == [
        "--runner", "DirectRunner", "--default_sdk_harness_log_level=WARNING"]
    mine = ["--default_sdk_harness_log_level=DEBUG"]
    assert logs.worker_options(mine, logging.WARNING) == mine
