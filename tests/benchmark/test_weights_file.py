import pytest
import torch
from safetensors.torch import save_file

from benchmark.weights_file import WeightsFileError, read_state_dict


def test_reads_safetensors_and_plain_torch_files(tmp_path):
    state = {"conv.weight": torch.arange(6.0).reshape(2, 3)}
    save_file(state, str(tmp_path / "w.safetensors"))
    torch.save(state, tmp_path / "w.pth")
    for name in ("w.safetensors", "w.pth"):
        assert torch.equal(read_state_dict(tmp_path / name)["conv.weight"], state["conv.weight"])


@pytest.mark.parametrize("payload, problem", [
    ({}, "does not hold a state dict"),
    ([torch.zeros(1)], "does not hold a state dict"),
    ({"a": torch.zeros(1), "nested": {"b": torch.zeros(1)}}, "not a flat name->tensor state dict"),
])
def test_refuses_what_is_not_a_flat_state_dict(tmp_path, payload, problem):
    torch.save(payload, tmp_path / "w.pth")
    with pytest.raises(WeightsFileError, match=problem) as err:
        read_state_dict(tmp_path / "w.pth")
    assert err.value.path == str(tmp_path / "w.pth")


class _RunsCode:
    def __reduce__(self):
        return (print, ("this would run",))


def test_a_pickle_that_would_run_code_is_refused_and_a_missing_file_named(tmp_path):
    torch.save({"x": _RunsCode()}, tmp_path / "evil.pth")
    with pytest.raises(WeightsFileError, match="cannot be read"):
        read_state_dict(tmp_path / "evil.pth")
    with pytest.raises(WeightsFileError, match="no such file"):
        read_state_dict(tmp_path / "absent.safetensors")
