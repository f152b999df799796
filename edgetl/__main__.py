from edgetl.cli.main import main

main()
