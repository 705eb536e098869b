from kdbench.cli.app import main

main()
