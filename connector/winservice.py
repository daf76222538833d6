"""Windows service wrapper (pywin32).

Install from an elevated prompt, with the connector installed in a virtualenv::

    connector-venv\\Scripts\\python -m connector.winservice install --config C:\\ProgramData\\Connector\\service.ini
    connector-venv\\Scripts\\python -m connector.winservice start
    connector-venv\\Scripts\\python -m connector.winservice stop
    connector-venv\\Scripts\\python -m connector.winservice remove

The path of the config file is kept in the service's registry key
(``HKLM\\SYSTEM\\CurrentControlSet\\Services\\CrmEspConnector\\Parameters``), so a
restart after editing it picks up the new configuration. A bad configuration
makes the service stop at start with the check-config report in the connector
log and in the Windows event log.

This module imports on every platform (the command line can be parsed and
tested anywhere); the service class exists only where pywin32 is installed.
"""

from __future__ import annotations

import argparse
import sys
import threading
from pathlib import Path

SERVICE_NAME = "CrmEspConnector"
DISPLAY_NAME = "CRM to email-marketing connector"
DESCRIPTION = "Releases Dynamics 365 email sends to Salesforce Marketing Cloud and brings tracking back."
CONFIG_OPTION = "ConfigPath"

try:  # pragma: no cover - exercised on Windows only
    import servicemanager
    import win32event
    import win32service
    import win32serviceutil

    HAVE_PYWIN32 = True
except ImportError:
    HAVE_PYWIN32 = False


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m connector.winservice", description="Manage the connector's Windows service."
    )
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    install = sub.add_parser("install", help="register the service (run elevated)")
    install.add_argument("--config", "-c", required=True, type=Path, help="path of service.ini")
    install.add_argument("--startup", choices=("auto", "manual", "disabled", "delayed"), default="auto")
    install.add_argument("--username", help="account to run as (DOMAIN\\user); default LocalSystem")
    install.add_argument("--password", help="password of --username (prefer entering it in services.msc)")
    sub.add_parser("remove", help="unregister the service")
    sub.add_parser("start", help="start the service")
    sub.add_parser("stop", help="stop the service (finishes in-flight work first)")
    sub.add_parser("restart", help="stop, then start: picks up an edited service.ini")
    debug = sub.add_parser("debug", help="run in this console, as the service would")
    debug.add_argument("--config", "-c", type=Path, help="path of service.ini (default: the registered one)")
    return parser


def run_until_stopped(config_path: Path, stop: threading.Event) -> int:
    """Run the daemon with ``config_path`` until ``stop`` is set; the exit code of ``connector run``."""
    from connector.commands.run import run_service_until

    return run_service_until(config_path, stop)


if HAVE_PYWIN32:  # pragma: no cover - Windows only

    class ConnectorWindowsService(win32serviceutil.ServiceFramework):
        _svc_name_ = SERVICE_NAME
        _svc_display_name_ = DISPLAY_NAME
        _svc_description_ = DESCRIPTION

        def __init__(self, args: list[str]) -> None:
            super().__init__(args)
            self._stop = threading.Event()
            self._stop_handle = win32event.CreateEvent(None, 0, 0, None)

        def SvcStop(self) -> None:  # noqa: N802 - pywin32's name
            self.ReportServiceStatus(win32service.SERVICE_STOP_PENDING)
            self._stop.set()
            win32event.SetEvent(self._stop_handle)

        def SvcDoRun(self) -> None:  # noqa: N802 - pywin32's name
            config = win32serviceutil.GetServiceCustomOption(SERVICE_NAME, CONFIG_OPTION)
            servicemanager.LogInfoMsg(f"{SERVICE_NAME} starting with {config}")
            code = run_until_stopped(Path(config), self._stop)
            if code != 0:
                servicemanager.LogErrorMsg(f"{SERVICE_NAME} stopped with exit code {code}; see the connector log")
                raise SystemExit(code)


def _require_pywin32() -> None:
    if not HAVE_PYWIN32:
        raise SystemExit("connector.winservice: pywin32 is needed (pip install pywin32) and only works on Windows")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.action == "debug" and args.config is not None:
        stop = threading.Event()
        try:
            return run_until_stopped(args.config, stop)
        except KeyboardInterrupt:
            stop.set()
            return 130
    _require_pywin32()
    return _win_main(args)  # pragma: no cover - Windows only


def _win_main(args: argparse.Namespace) -> int:  # pragma: no cover - Windows only
    cls = f"{__name__}.ConnectorWindowsService"
    if args.action == "install":
        startup = {
            "auto": win32service.SERVICE_AUTO_START,
            "delayed": win32service.SERVICE_AUTO_START,
            "manual": win32service.SERVICE_DEMAND_START,
            "disabled": win32service.SERVICE_DISABLED,
        }[args.startup]
        win32serviceutil.InstallService(
            cls,
            SERVICE_NAME,
            DISPLAY_NAME,
            startType=startup,
            userName=args.username,
            password=args.password,
            description=DESCRIPTION,
            exeName=sys.executable,
            exeArgs=f'-m {__name__} --service',
            delayedstart=args.startup == "delayed",
        )
        win32serviceutil.SetServiceCustomOption(SERVICE_NAME, CONFIG_OPTION, str(args.config.resolve()))
        print(f"installed {SERVICE_NAME} with config {args.config.resolve()}")
    elif args.action == "remove":
        win32serviceutil.RemoveService(SERVICE_NAME)
    elif args.action == "start":
        win32serviceutil.StartService(SERVICE_NAME)
    elif args.action == "stop":
        win32serviceutil.StopService(SERVICE_NAME)
    elif args.action == "restart":
        win32serviceutil.RestartService(SERVICE_NAME)
    elif args.action == "debug":
        config = win32serviceutil.GetServiceCustomOption(SERVICE_NAME, CONFIG_OPTION)
        return run_until_stopped(Path(config), threading.Event())
    return 0


if __name__ == "__main__":  # pragma: no cover
    if len(sys.argv) > 1 and sys.argv[1] == "--service" and HAVE_PYWIN32:
        servicemanager.Initialize()
        servicemanager.PrepareToHostSingle(ConnectorWindowsService)
        servicemanager.StartServiceCtrlDispatcher()
    else:
        raise SystemExit(main())
