"""``python -m appliance``: the same CLI as the ``appliance`` command."""

from appliance.cli import main

main()
