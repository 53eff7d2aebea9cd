from iii.cli import main

main()
