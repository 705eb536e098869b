from kdbench.cli import main

main()
