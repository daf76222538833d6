"""Configuration: one pydantic model per ``service.ini`` section, and the loader that reads it.

``load_config`` reports every problem at once, each naming ``section.key`` and its line.
The package, in the order a file is read:

- ``loader``    the line-numbered ini reader (UTF-8 and control-character checks, secrets
  from the environment or the secrets file) and ``load_config``
- ``mappings``  ``[mapping.TABLE]`` lines and ``[transform.NAME]`` tables
- ``models``    the pydantic models, one per section (extra="forbid", SecretStr)
- ``fields``    what the models say about each option (secret, list, path, range)
- ``rules``     the checks across options (auth needs its keys, URLs, files, folders)
- ``problems``  ``ConfigProblem``: file, line, section, key, message, hint

Import the public names from here (``from connector.config import Config, load_config``).
"""

from __future__ import annotations

from connector.config.fields import number_range, secret_keys, section_models
from connector.config.loader import MAX_INI_BYTES, load_config
from connector.config.mappings import VALUE_TRANSFORMS
from connector.config.models import (
    BatchingSettings,
    Config,
    CrmSettings,
    EspSettings,
    FieldMapping,
    EmailsSettings,
    ImportsSettings,
    KpiSettings,
    LoggingSettings,
    Section,
    SendsSettings,
    ServiceSettings,
    SftpSettings,
    StagingSettings,
    StateSettings,
    TimeoutSettings,
    TrackingSettings,
    url_password,
)
from connector.config.problems import MAX_PROBLEMS, ConfigProblem, format_problems
from connector.config.rules import MAX_PEM_BYTES, folder_problem, pem_certificates_problem

__all__ = [
    "MAX_INI_BYTES",
    "MAX_PEM_BYTES",
    "MAX_PROBLEMS",
    "VALUE_TRANSFORMS",
    "BatchingSettings",
    "Config",
    "ConfigProblem",
    "CrmSettings",
    "EspSettings",
    "FieldMapping",
    "EmailsSettings",
    "ImportsSettings",
    "KpiSettings",
    "LoggingSettings",
    "Section",
    "SendsSettings",
    "ServiceSettings",
    "SftpSettings",
    "StagingSettings",
    "StateSettings",
    "TimeoutSettings",
    "TrackingSettings",
    "folder_problem",
    "format_problems",
    "load_config",
    "number_range",
    "pem_certificates_problem",
    "secret_keys",
    "section_models",
    "url_password",
]
