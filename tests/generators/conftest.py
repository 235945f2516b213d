"""Fixtures shared by the generator tests."""

import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Run torch single-threaded: on a small shared box, an op whose second OpenMP thread is
    descheduled waits for it (measured ~40x slower BatchNorm than with one thread)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
