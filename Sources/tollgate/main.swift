import Tollgate

await TollgateCLI.main()
