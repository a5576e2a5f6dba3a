import SlipwayCLI

await SlipwayCommand.start()
