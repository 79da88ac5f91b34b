from tfrig.cli import main

main()
