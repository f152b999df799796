"""`edgetl deploy` and `edgetl device` over SSH: the host's side of putting a bundle on a device.

The transport is the system OpenSSH client in batch mode (`ssh`), so keys, ~/.ssh/config, ProxyJump and
known_hosts work as in the user's terminal. Nothing here imports torch, timm or onnx: a deploy runs from any
machine that can build or hold a bundle. What runs on the device are the standard-library scripts
`device_probe`, `device_env` and `device_store`, sent to the device's `python3 -` (the device may not have edgetl
yet), and the device-side edgetl the host installs into a venv it owns there.

  ssh         the transport: run a command, upload files, one-line errors, bytes counted
  probe       what the device has (the probe script's JSON), its pip platform tags, the table
  wheelhouse  the wheels the device needs, downloaded on the host for the device's platform, cached
  env         the device venv: what is missing, pushed, installed, and the import check (never torch)
  chunks      content-defined chunks of the bundle's files: a new head re-sends the head, not the backbone
  push        upload what the device lacks, assemble and verify there, switch `current` atomically, roll back
  run         `edgetl bench` and `edgetl predict` on the device, results copied back
  deploy      the commands: deploy, rollback, probe
  auto        deploy --target auto: candidates built here, pushed, timed by `edgetl choose` ON the device
"""
