from pathlib import Path

import pytest

from appliance.config import Config, ConfigError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


def test_defaults_load_from_empty_file(tmp_path: Path) -> None:
    config = Config.load(write(tmp_path, ""))
    assert config.modem.baudrate == 115200
    assert config.modem.rtscts is False
    assert config.store_path == Path("/var/lib/textbridge/textbridge.db")


def test_values_are_typed(tmp_path: Path) -> None:
    config = Config.load(write(tmp_path, """
[general]
data_dir = "/tmp/tb"
home_country = "GB"
[modem]
port = "/dev/serial/by-id/usb-Huawei-if00"
rtscts = true
sweep_interval = 5
pin_file = "/etc/textbridge/sim-pin"
"""))
    assert config.general.data_dir == Path("/tmp/tb")
    assert config.modem.sweep_interval == 5.0 and isinstance(config.modem.sweep_interval, float)
    assert config.modem.pin_file == Path("/etc/textbridge/sim-pin")


@pytest.mark.parametrize(
    ("text", "key", "words"),
    [
        ("[modem]\nbaudrate = 12345", "modem.baudrate", "must be one of"),
        ("[modem]\nbaudrate = '115200'", "modem.baudrate", "whole number"),
        ("[modem]\nrtscts = 1", "modem.rtscts", "true or false"),
        ("[modem]\nbauds = 9600", "modem.bauds", "did you mean 'baudrate'"),
        ("[modem]\ncommand_timeout = 0.1", "modem.command_timeout", "at least 0.5"),
        ("[modem]\nport = 'ttyUSB0'", "modem.port", "absolute device path"),
        ("[modem]\nstorage = 'XX'", "modem.storage", "'SM', 'ME', 'MT'"),
        ("[general]\nhome_country = 'germany'", "general.home_country", "ISO 3166"),
        ("[nonsense]\nx = 1", "nonsense", "unknown key"),
        ("modem = 3", "modem", "expected a table"),
    ],
)
def test_wrong_values_name_the_key(tmp_path: Path, text: str, key: str, words: str) -> None:
    with pytest.raises(ConfigError) as info:
        Config.load(write(tmp_path, text))
    assert info.value.key == key
    assert words in str(info.value)
    assert str(info.value).startswith(key + ":")


def test_broken_toml_is_reported(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        Config.load(write(tmp_path, "[modem\n"))


def test_cli_reports_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from appliance.__main__ import main

    assert main(["check-config", "--config", str(write(tmp_path, "[modem]\nbaudrate = 1"))]) == 2
    assert "modem.baudrate" in capsys.readouterr().err
