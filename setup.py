"""Packaging for exchange-emu, an emulator of Exchange 2010 transport roles."""

from setuptools import find_packages, setup

setup(
    name="exchange-emu",
    version="0.1.0",
    description=(
        "A Twisted emulator of the Microsoft Exchange 2010 transport roles "
        "(mailbox, hub, edge, legacy) built around shadow redundancy"
    ),
    python_requires=">=3.11",
    # twisted.plugins is listed explicitly: it is a plugin directory without an
    # __init__.py of ours, so find_packages() cannot see it.
    packages=[*find_packages(include=["exchange_emu", "exchange_emu.*"]), "twisted.plugins"],
    package_data={"twisted.plugins": ["exchange_emu_plugins.py"],
                  "exchange_emu.lab": ["web/*.html", "web/*.js", "web/*.css"]},
    install_requires=[
        "twisted[tls]>=24.3",
        "zope.interface>=6",
        "sqlalchemy>=2.0",
        "service-identity>=23.1",
        "pyOpenSSL>=24",
        "cryptography>=42",
    ],
    extras_require={
        # SQLAlchemy 2.1 takes postgresql:// to mean psycopg 3; +psycopg2 URLs work too.
        "postgresql": ["psycopg[binary]>=3.1", "psycopg2-binary>=2.9"],
        "test": [
            "pytest>=8",
            "hypothesis>=6",
            "aiosmtpd>=1.4",
            "psycopg[binary]>=3.1",
            "psycopg2-binary>=2.9",
            "mypy>=1.10",
            "mypy-zope>=1.0",
            "ruff>=0.5",
            # coverage-guided fuzzing (tests/fuzz/); wheels exist for Linux x86_64 only
            "atheris>=2.3; sys_platform == 'linux' and platform_machine == 'x86_64'",
            # Browser tests of the web queue viewer, driving Debian's chromium (no download).
            "playwright>=1.40",
            "matplotlib>=3.7",  # benchmarks/suite.py draws docs/images/benchmarks.png
        ],
    },
    entry_points={"console_scripts": ["exchange-emu = exchange_emu.cli:main"]},
)
